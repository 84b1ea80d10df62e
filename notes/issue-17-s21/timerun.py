"""timerun.py BUNDLE...: bench/detect.py's time_loupe_run (loupe run on the bench's 100 test scenes, the median of
the step times), twice per bundle, alternated; run with OMP_NUM_THREADS=2 (the bench's 2 threads)."""
import sys; sys.path.insert(0, "/work/main/bench")
from pathlib import Path
from detect import time_loupe_run
imgs = Path("/tmp/h17s15/bench/test/images")
for rep in range(2):
    for b in sys.argv[1:]:
        w = Path("/tmp/tr") / Path(b).name; w.mkdir(parents=True, exist_ok=True)
        print(b, rep, time_loupe_run(Path(b), imgs, w), flush=True)
