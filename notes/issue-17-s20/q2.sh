# [RUNS=DIR] notes/issue-17-s20/q2.sh TAG SEED [flags]: session 19's q2.sh into RUNS (/tmp/s20/runs; session 22:
# /tmp/s22/runs): the default command at 2 threads
# (quiet machine, default 4.5 min budget), then loupe eval --json on test / dev / dev2 at 2 threads
cd /work/main
TAG=$1; S=$2; shift 2
R=${RUNS:-/tmp/s20/runs}
mkdir -p $R
OMP_NUM_THREADS=2 /usr/bin/time -f "%U %S %e" -o $R/$TAG$S.time .venv/bin/loupe train detect /tmp/h17s15/bench \
  --out $R/$TAG$S --seed $S "$@" > $R/$TAG$S.log 2>&1
for SET in bench dev dev2; do
  OMP_NUM_THREADS=2 .venv/bin/loupe eval $R/$TAG$S /tmp/h17s15/$SET --json > $R/$TAG$S.eval.$SET.json 2> $R/$TAG$S.eval.$SET.err
done
