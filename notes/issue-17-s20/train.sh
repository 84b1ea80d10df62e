# SEEDS="0 1" notes/issue-17-s20/train.sh TAG [flags...]: session 18's train.sh (loupe train detect on the bench at
# 1 thread, --max-minutes 60, then loupe eval --json on test / dev / dev2), into /tmp/s20/runs
cd /work/main
TAG=$1; shift
R=/tmp/s20/runs
mkdir -p $R
for S in $SEEDS; do
  OMP_NUM_THREADS=1 /usr/bin/time -f "%U %S %e" -o $R/$TAG$S.time .venv/bin/loupe train detect /tmp/h17s15/bench \
    --out $R/$TAG$S --threads 1 --max-minutes 60 --seed $S -q "$@" > $R/$TAG$S.log 2>&1
  for SET in bench dev dev2; do
    OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/loupe eval $R/$TAG$S /tmp/h17s15/$SET --json > $R/$TAG$S.eval.$SET.json 2> $R/$TAG$S.eval.$SET.err
  done
done
