"""``loupe serve STATION``: run a station until SIGTERM or Ctrl-C.

The station file names the jobs, the source, the trigger, the line adapters and
the stores (see ``host/core/station.py`` and ``docs/line.md``). ``--source``,
``--io``, ``--store`` and ``--hmi`` replace the file's entries. On SIGTERM or
Ctrl-C the frame in progress finishes and is stored, every adapter and store
is closed, and the command exits 0.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from host import hookimpl

from ..core.contracts import Command


class ServeCommand(Command):
    name = "serve"
    help = "run a station: the line triggers inspections through its adapters (until SIGTERM/Ctrl-C)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("station", metavar="STATION", help="a station file (loupe_station: 1)")
        parser.add_argument("--source", metavar="SPEC", help="replaces the station's source (folder:PATH, ...)")
        parser.add_argument("--io", action="append", metavar="SPEC",
                            help="a line adapter, e.g. tcp://127.0.0.1:2000 (repeatable; replaces the station's io)")
        parser.add_argument("--store", action="append", metavar="SPEC",
                            help="a result store, e.g. sqlite:results.sqlite (repeatable; replaces the station's)")
        parser.add_argument("--hmi", metavar="HOST:PORT", help="serve the operator screen here (needs loupe-hmi)")
        parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")

    def run(self, args: argparse.Namespace) -> int:
        from ..core.manager import create_plugin_manager
        from ..core.station import Station, load_station

        stop = threading.Event()
        old = {}

        def on_signal(signum, frame):
            if stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C while stopping: give up waiting (exit 130)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
        try:
            pm = create_plugin_manager()
            config = load_station(args.station, pm.catalogue, source=args.source, io=args.io, store=args.store,
                                  hmi=args.hmi)
            station = Station(config, pm)
            station.start()
            try:
                build = sum(v for k, v in station.startup_ms.items() if k.startswith("build "))
                print(f"station {config.name} ready ({station.state}): job {station.job} of "
                      f"{', '.join(station.jobs)}; {len(station.jobs)} pipelines built in {build:.1f} ms; "
                      f"trigger {station.trigger_mode}; next result id {station.status()['next_result_id']}",
                      flush=True)
                for spec, adapter in station.adapters:
                    pid = getattr(adapter, "pid", None)
                    print(f"  io: {getattr(adapter, 'endpoint', spec)}" + (f" (own process, pid {pid})" if pid else ""),
                          flush=True)
                for spec in config.stores:
                    print(f"  store: {spec}", flush=True)
                while not stop.wait(0.5):
                    pass
                if not args.quiet:
                    print("stopping: finishing the frame in progress", file=sys.stderr, flush=True)
            finally:
                t0 = time.perf_counter()
                station.close()
            st = station.status()
            c = st["counts"]
            print(f"stopped in {(time.perf_counter() - t0) * 1e3:.0f} ms: {st['results_issued']} results issued "
                  f"({c['pass']} pass, {c['review']} review, {c['fail']} fail, {c['error']} error), "
                  f"{st['missed']} missed triggers ({st['overruns']} buffer overruns), "
                  f"next result id {st['next_result_id']}", flush=True)
            return 0
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


@hookimpl
def loupe_commands(register):
    register(ServeCommand)
