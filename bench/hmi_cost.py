"""The operator screen's cost in the station's process, by thread CPU time (a busy machine changes it less
than a rate): the adapter's ``on_event`` and its sender thread, against all the CPU the station's process
spends per result. The plates station of ``make screenshots``, software triggers, no browser.

    .venv/bin/python bench/hmi_cost.py [--results 500]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    from host import create_plugin_manager
    from host.core.station import Station, load_station
    from loupe_hmi.adapter import OperatorScreen
    from loupe_hmi.screenshots import _station

    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=int, default=500)
    n = ap.parse_args().results
    on_event, sender = [], []
    orig_event, orig_sender = OperatorScreen.on_event, OperatorScreen._hand_frames

    def timed_event(self, ev):
        t = time.thread_time_ns()
        orig_event(self, ev)
        on_event.append(time.thread_time_ns() - t)

    def timed_sender(self):
        t = time.thread_time_ns()
        orig_sender(self)
        sender.append(time.thread_time_ns() - t)

    OperatorScreen.on_event, OperatorScreen._hand_frames = timed_event, timed_sender
    pm = create_plugin_manager()
    with tempfile.TemporaryDirectory() as tmp:
        st = Station(load_station(_station(Path(tmp)), pm.catalogue), pm)
        st.start()
        for _ in range(20):
            st.wait_result(st.trigger(), timeout=30)
        time.sleep(1)
        on_event.clear()
        c0 = _cpu_s()
        for _ in range(n):
            st.wait_result(st.trigger(), timeout=30)
        time.sleep(1)
        cpu = _cpu_s() - c0
        st.close()
    ev_s = sum(on_event) / 1e9
    print(f"station process: {cpu * 1e3 / n:.3f} ms CPU per result")
    print(f"on_event: {len(on_event)} events, median {statistics.median(on_event) / 1e3:.1f} us, "
          f"{ev_s / cpu:.2%} of the station's CPU")
    print(f"sender thread (batches, live frames; warm-up included): {sender[0] / 1e6:.1f} ms, "
          f"{sender[0] / 1e9 / cpu:.2%} of the station's CPU over the measured results")


if __name__ == "__main__":
    main()
