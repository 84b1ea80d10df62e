#!/bin/bash
# one queue per detector bundle (B0 or B1 of session 15), one refit at a time, one thread
B=$1; shift
cd /work/main
for V in "$@"; do
  OMP_NUM_THREADS=1 .venv/bin/python notes/issue-17-s18/refit.py /tmp/h17s15/runs/$B /tmp/h17s15/cache/$B.pkl $V >> /tmp/s18/$B.refit 2>&1
done
