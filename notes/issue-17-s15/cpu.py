import sys, json
from pathlib import Path
sys.path.insert(0, "/work/wt/h17/bench")
import detect as bd
for rep in range(2):
    for b in sys.argv[1:]:
        print(json.dumps({"rep": rep, "bundle": b, **bd.cpu_per_image(Path(b), Path("/tmp/h17s15/bench/test/images"))}), flush=True)
