import json, subprocess, sys, os
from pathlib import Path
sys.path.insert(0, "bench")
from detect import without_verifier
for run in sys.argv[1:]:
    out = Path(f"/tmp/s20/alone/{Path(run).name}")
    if not out.exists():
        without_verifier(Path(run), out)
    ca = []
    for s in ("bench", "dev", "dev2"):
        r = subprocess.run([".venv/bin/loupe", "eval", str(out), f"/tmp/h17s15/{s}", "--json"], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "2"})
        ca.append(json.loads(r.stdout)["count_accuracy"])
    print(Path(run).name, ca, round(sum(ca) / 3, 3), json.load(open(f"{run}/bundle.json"))["decode"]["min_score"])
