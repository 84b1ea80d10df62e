# SEEDS="0 1" notes/issue-17-s18/train.sh TAG [flags...]: loupe train detect on the bench, 1 thread, then
# loupe eval --json on test / dev / dev2 (session 16's train.sh + eval.sh, run from /work/main, into /tmp/s18/runs)
cd /work/main
TAG=$1; shift
R=/tmp/s18/runs
for S in $SEEDS; do
  OMP_NUM_THREADS=1 /usr/bin/time -f "%U %S %e" -o $R/$TAG$S.time .venv/bin/loupe train detect /tmp/h17s15/bench \
    --out $R/$TAG$S --threads 1 --max-minutes 60 --seed $S -q "$@" > $R/$TAG$S.log 2>&1
  for SET in bench dev dev2; do
    OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/loupe eval $R/$TAG$S /tmp/h17s15/$SET --json > $R/$TAG$S.eval.$SET.json 2> $R/$TAG$S.eval.$SET.err
  done
done
