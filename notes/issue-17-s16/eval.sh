# eval.sh BUNDLE: loupe eval --json on test / dev / dev2 (1 thread)
cd /work/wt/h17
B=$1
for S in bench dev dev2; do
  OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/loupe eval $B /tmp/h17s15/$S --json > $B.eval.$S.json 2> $B.eval.$S.err
done
