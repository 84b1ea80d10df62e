cd /tmp/h17s16
R=/tmp/h17s16/runs
while kill -0 4190 2>/dev/null; do sleep 5; done
echo "$(date +%T) trained RB0 $(cat $R/RB0.time)"
./eval.sh $R/RB0; echo "$(date +%T) evaluated RB0"; python3 summ.py $R/RB0
run() { T=$1; S=$2; shift 2; echo "$(date +%T) start $T$S $*"; SEEDS=$S ./train.sh $T "$@"; echo "$(date +%T) trained $T$S $(cat $R/$T$S.time)"; ./eval.sh $R/$T$S; echo "$(date +%T) evaluated $T$S"; python3 summ.py $R/$T$S; }
run RB 1 --reg-area 1.0 --box-loss both
while pgrep -f lead17b.sh >/dev/null; do sleep 5; done
cd /work/wt/h17
OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/python /tmp/h17s16/boxq.py /tmp/h17s15/runs/V2 $R/RGE2 $R/RB0 $R/RB1
OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/python /tmp/h17s16/errbundle.py /tmp/h17s15/runs/V2 $R/RGE2 $R/RB0 $R/RB1
echo "$(date +%T) done"
