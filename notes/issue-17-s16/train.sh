# SEEDS="0 1" ./train.sh TAG [flags...]: loupe train detect on the bench, 1 thread
cd /work/wt/h17
TAG=$1; shift
for S in $SEEDS; do
OMP_NUM_THREADS=1 /usr/bin/time -f "%U %S %e" -o /tmp/h17s16/runs/$TAG$S.time .venv/bin/loupe train detect /tmp/h17s15/bench --out /tmp/h17s16/runs/$TAG$S \
  --threads 1 --max-minutes 60 --seed $S -q "$@" > /tmp/h17s16/runs/$TAG$S.log 2>&1
done
