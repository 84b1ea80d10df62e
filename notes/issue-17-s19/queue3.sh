for S in 0 1 2 3 4 5; do /tmp/s19/q2.sh V $S; done
echo done > /tmp/s19/queue3.done
