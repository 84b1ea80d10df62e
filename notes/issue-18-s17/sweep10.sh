cd /work/main
name=$1; shift
for s in 0 1 2 3 4 5; do
  OMP_NUM_THREADS=1 .venv/bin/python bench/classify_sweep.py --per 10 --seed $s --name $name --work /tmp/s17/sw --log /tmp/s17/sw.jsonl "$@" 2>&1 | tail -1
done
