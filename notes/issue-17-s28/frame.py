"""frame.py ROUNDS BUNDLE...: ``loupe run`` per 320 px frame (bench/detect.py's ``time_loupe_run``: the detect.objects
step's median over the bench's 100 test scenes, 2 threads), the bundles in turn, ROUNDS times (issue 17, session 28)."""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from detect import time_loupe_run  # noqa: E402

rounds, bundles = int(sys.argv[1]), sys.argv[2:]
with tempfile.TemporaryDirectory() as tmp:
    for r in range(rounds):
        for b in bundles:
            res = time_loupe_run(Path(b), Path("/tmp/h17s15/bench/test/images"), Path(tmp))
            print(r, b, res, flush=True)
