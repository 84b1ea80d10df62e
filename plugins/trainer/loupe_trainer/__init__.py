"""Loupe trainers: torch transfer learning, PatchCore-class anomaly detection, ONNX export and optimisation."""
import os

#: How long torch's OpenMP threads (libgomp) spin before they sleep at a barrier, unless the user set it or
#: OMP_WAIT_POLICY. libgomp's default (300,000) lets a waiting thread hold its core while the thread it waits for
#: is descheduled: with one other busy process on a 2-core machine, a 2-thread detector training ran 10x slower
#: (3 epochs: 115 s against 12 s quiet). 10,000 spins: 17 s loaded, 13 s quiet (notes/issue-17.md, session 14).
#: libgomp reads it when torch is first imported; every trainer imports torch lazily, after this package.
GOMP_SPINCOUNT = "10000"

if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
