cd /work/wt/h17
Q=$(pgrep -f "/bin/sh ./queue2.sh" | head -1)
while [ -n "$Q" ] && kill -0 $Q 2>/dev/null; do sleep 5; done
echo "$(date +%T) boxq"
OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/python /tmp/h17s16/boxq.py /tmp/h17s15/runs/V0 /tmp/h17s15/runs/V1 /tmp/h17s16/runs/R0 /tmp/h17s16/runs/R1 /tmp/h17s16/runs/RG0 /tmp/h17s16/runs/RG1
echo "$(date +%T) errbundle"
sed -e 's#/tmp/h17s15/{n}#/tmp/h17s15/{n}#' notes/issue-17-s15/errbundle.py > /tmp/h17s16/errbundle.py
OMP_NUM_THREADS=1 LOUPE_ORT_THREADS=1 .venv/bin/python /tmp/h17s16/errbundle.py /tmp/h17s15/runs/V0 /tmp/h17s15/runs/V1 /tmp/h17s16/runs/R0 /tmp/h17s16/runs/R1 /tmp/h17s16/runs/RG0 /tmp/h17s16/runs/RG1
echo "$(date +%T) done"
