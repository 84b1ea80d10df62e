#!/bin/bash
cd ${WORK:-/tmp/loupe-soak-own}
# a station with Modbus in its own process, 15000 triggers at 100 Hz; RSS of both processes every 10 s (rss.txt)
# set-up: mkdir -p $WORK; cp -r examples/station/{four-holes.yaml,three-holes.yaml,images} $WORK; cp notes/issue-12-s12/st-modbus-own.yaml $WORK/st.yaml
rm -f results.sqlite* *.state.json rss.txt
OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 /work/main/.venv/bin/loupe serve st.yaml -q > serve.log 2>&1 &
for i in $(seq 60); do grep -q "io: modbus" serve.log && break; sleep 0.5; done
S=$(pgrep -f "^/work/main/.venv/bin/python.*serve st.yaml" | head -1)
C=$(ps -o pid= --ppid $S | head -1)
M=$(grep -o "modbus://[0-9.:]*" serve.log)
( while kill -0 $S 2>/dev/null; do echo "$(date +%s) $(grep VmRSS /proc/$S/status | awk '{print $2}') $(grep VmRSS /proc/$C/status 2>/dev/null | awk '{print $2}')" >> rss.txt; sleep 10; done ) &
/work/main/.venv/bin/loupe line plc --io $M --rate 100 --count 15000 --ack > plc.log 2>&1
kill -TERM $S; sleep 3
cat plc.log serve.log
echo child alive after stop: $(kill -0 $C 2>/dev/null && echo yes || echo no)
sqlite3 results.sqlite "select count(*), min(idx), max(idx) from frames" 2>/dev/null || /work/main/.venv/bin/python -c "import sqlite3;print(sqlite3.connect('results.sqlite').execute('select count(*),min(idx),max(idx) from frames').fetchone())"
