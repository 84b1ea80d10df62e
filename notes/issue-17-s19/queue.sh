for S in 2 3 4 5; do
  /tmp/s19/q2.sh D $S
  /tmp/s19/q2.sh L $S --select last
done
echo done > /tmp/s19/queue.done
