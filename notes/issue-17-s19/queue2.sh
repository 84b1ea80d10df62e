for S in 0 1; do /tmp/s19/q2.sh D $S --select best; done
echo done > /tmp/s19/queue2.done
