cd /tmp/h17s16
R=/tmp/h17s16/runs
Q=$(pgrep -f "/bin/sh ./queue6.sh" | head -1)
while [ -n "$Q" ] && kill -0 $Q 2>/dev/null; do sleep 3; done
run() { T=$1; S=$2; shift 2; echo "$(date +%T) start $T$S $*"; SEEDS=$S ./train.sh $T "$@"; echo "$(date +%T) trained $T$S $(cat $R/$T$S.time)"; ./eval.sh $R/$T$S; echo "$(date +%T) evaluated $T$S"; python3 summ.py $R/$T$S; }
run RB 2 --reg-area 1.0 --box-loss both
cd /work/wt/h17
OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/python /tmp/h17s16/boxq.py $R/RB2
OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/python /tmp/h17s16/errbundle.py $R/RB2
echo "$(date +%T) done"
