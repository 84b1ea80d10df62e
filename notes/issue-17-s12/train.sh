cd /work/wt/h17
for S in "$@"; do
OMP_NUM_THREADS=1 /usr/bin/time -f "%U %S %e" -o /tmp/h17t/runs/B$S.time .venv/bin/loupe train detect /tmp/h17t/bench --out /tmp/h17t/runs/B$S \
  --threads 1 --verify --max-minutes 60 --seed $S -q > /tmp/h17t/runs/B$S.log 2>&1
done
