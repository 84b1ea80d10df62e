cd /tmp/h17s16
R=/tmp/h17s16/runs
run() { T=$1; S=$2; shift 2; echo "$(date +%T) start $T$S $*"; SEEDS=$S ./train.sh $T "$@"; echo "$(date +%T) trained $T$S $(cat $R/$T$S.time)"; ./eval.sh $R/$T$S; echo "$(date +%T) evaluated $T$S"; }
ev() { ./eval.sh $R/$1; echo "$(date +%T) evaluated $1"; }
while kill -0 25389 2>/dev/null; do sleep 5; done
echo "$(date +%T) trained R1 $(cat $R/R1.time)"
ev R0
ev R1
python3 summ.py $R/R0 $R/R1
run RG 0 --reg-area 1.0 --box-loss giou
run RG 1 --reg-area 1.0 --box-loss giou
python3 summ.py $R/RG0 $R/RG1
