cd /tmp/h17s16
R=/tmp/h17s16/runs
run() { T=$1; S=$2; shift 2; echo "$(date +%T) start $T$S $*"; SEEDS=$S ./train.sh $T "$@"; echo "$(date +%T) trained $T$S $(cat $R/$T$S.time)"; ./eval.sh $R/$T$S; echo "$(date +%T) evaluated $T$S"; python3 summ.py $R/$T$S; }
run G 0 --box-loss giou
run G 1 --box-loss giou
run RGE 0 --reg-area 1.0 --box-loss giou --size-elongation 0.5
run RGE 1 --reg-area 1.0 --box-loss giou --size-elongation 0.5
cd /work/wt/h17
OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/python /tmp/h17s16/boxq.py $R/G0 $R/G1 $R/RGE0 $R/RGE1
OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/python /tmp/h17s16/errbundle.py $R/G0 $R/G1 $R/RGE0 $R/RGE1
echo "$(date +%T) done"
