import sys, json
from pathlib import Path
sys.path.insert(0, "/work/wt/h17/bench")
import detect as bd
imgs, work = Path("/tmp/h17s15/bench/test/images"), Path("/tmp/h17s15/timing")
for rep in range(int(sys.argv[1])):
    for b in sys.argv[2:]:
        print(json.dumps({"rep": rep, "bundle": b, **bd.time_loupe_run(Path(b), imgs, work, threads=2, verify=True)}), flush=True)
