"""``modbus://HOST:PORT``: a Modbus TCP server with an In-Sight-style map.

The map (0-based protocol addresses; docs/line.md "Modbus map and handshake
timing" is the reference a PLC programmer reads):

coils (FC 1/5/15, written by the PLC)
    0 TriggerEnable, 1 Trigger, 2 ResultsAck, 3 ExecuteCommand, 4 SetOffline
discrete inputs (FC 2, status)
    0 TriggerReady, 1 TriggerAck, 2 Busy, 3 InspectionCompleted (toggles),
    4 ResultsValid, 5 BufferOverrun, 6 JobPass, 7 Online, 8 CommandCompleted,
    9 CommandFailed, 10 Error (station in state Error)
holding registers (FC 3/6/16, written by the PLC)
    0 command code, 1 job id (argument of command 1)
input registers (FC 4)
    0 current job id, 1 state code, 2-3 result id (uint32, high word first),
    4 result code, 5 last error code, 6 missed triggers, 7 results waiting,
    8.. measurements as float32 (IEEE 754, high word first), two registers each

A job id is the job's index in the station's job list (``control.jobs``, the
order of the station file).

pymodbus runs in its own thread with its own event loop. The PLC's writes are
handled on that loop, before the write is answered: a rising Trigger edge
calls ``control.trigger()`` (which returns at once) and sets TriggerAck, so the
PLC sees TriggerAck on its first read after the write. Results reach the
registers from ``on_event`` (the adapter's own queue thread); a Modbus client
never waits on the inspection, and the inspection never waits on a client.
While one of the PLC's triggers is in progress, a read of the status inputs or
the input registers also takes the station's newer results at once
(``_Tables.catch_up``), so the PLC sees ResultsValid on its first poll after
the result, not one event hand-over later; their events are then skipped.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import struct
import threading
import time
from collections import deque
from typing import Any, ClassVar

from pydantic import Field

from host import LineAdapter, Params, StationActionError, StationEvent, StationResult, UsageError

log = logging.getLogger("loupe.line.modbus")

# coils
TRIGGER_ENABLE, TRIGGER, RESULTS_ACK, EXECUTE_COMMAND, SET_OFFLINE = range(5)
COILS = ("TriggerEnable", "Trigger", "ResultsAck", "ExecuteCommand", "SetOffline")
# discrete inputs
(TRIGGER_READY, TRIGGER_ACK, BUSY, INSPECTION_COMPLETED, RESULTS_VALID, BUFFER_OVERRUN, JOB_PASS, ONLINE,
 COMMAND_COMPLETED, COMMAND_FAILED, ERROR_BIT) = range(11)
INPUTS = ("TriggerReady", "TriggerAck", "Busy", "InspectionCompleted", "ResultsValid", "BufferOverrun",
          "JobPass", "Online", "CommandCompleted", "CommandFailed", "Error")
# holding registers
HR_COMMAND, HR_JOB = 0, 1
# input registers
IR_JOB, IR_STATE, IR_RESULT_ID, IR_RESULT_CODE, IR_ERROR, IR_MISSED, IR_WAITING, IR_MEASUREMENTS = 0, 1, 2, 4, 5, 6, 7, 8

#: command codes (holding register 0), run on a rising edge of ExecuteCommand
COMMANDS = {1: "select_job", 2: "start_continuous", 3: "stop_continuous", 4: "reset", 5: "reload",
            6: "reset_counters"}
STATE_CODES = {"Initialized": 0, "Ready": 1, "SingleExecution": 2, "ContinuousExecution": 3, "Error": 4}
RESULT_CODES = {"pass": 1, "fail": 2, "review": 3, "error": 4}
#: input register 5 after a refused trigger or a failed command
ERROR_CODES = {"busy": 1, "not_ready": 2, "buffer_full": 3, "unknown_job": 4, "bad_recipe": 5, "no_result": 6,
               "offline": 7, "bad_command": 8, "trigger_disabled": 9}
OTHER_ERROR = 99

ILLEGAL_ADDRESS = 2


class ModbusParams(Params):
    measurements: list[str] = Field(default_factory=list, description=(
        "measurement names (``step.name``) placed as float32 pairs from input register 8; "
        "empty: the first `measurement_count` of each result, in the recipe's order"))
    measurement_count: int = Field(8, ge=0, le=60, description="float32 slots when `measurements` is empty")
    device_id: int = Field(0, ge=0, le=247, description="unit id answered (0: any)")


def parse_target(target: str, default_port: int) -> tuple[str, int]:
    """``//HOST:PORT`` (or ``HOST:PORT``) -> (host, port)."""
    t = target[2:] if target.startswith("//") else target
    t = t.split("/", 1)[0]
    host, _, port = t.rpartition(":")
    if not host:
        host, port = t, ""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if port and (not port.isdigit() or int(port) > 65535):
        raise ValueError("the port must be a number 0-65535 (//HOST:PORT)")
    return host or "127.0.0.1", int(port) if port else default_port


def float_registers(value: Any) -> tuple[int, int]:
    """A value as one float32 in two registers, high word first (NaN when not a number)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    hi, lo = struct.unpack(">HH", struct.pack(">f", f))
    return hi, lo


class _Tables:
    """The four Modbus tables and the handshake logic around them.

    Every method runs under ``lock``; the pymodbus loop calls ``get``/``set``,
    the adapter's queue thread calls the ``on_*`` methods.
    """

    def __init__(self, adapter: "ModbusAdapter"):
        p = adapter.params
        self.adapter = adapter
        self.control = adapter.control
        self.lock = threading.RLock()
        self.slots = len(p.measurements) if p.measurements else p.measurement_count
        self.coils = [False] * len(COILS)
        self.inputs = [False] * len(INPUTS)
        self.holding = [0] * 2
        self.registers = [0] * (IR_MEASUREMENTS + 2 * self.slots)
        self.pending: set[int] = set()          # triggers taken here whose result has not come
        try:   # results not yet acknowledged by the PLC: as many as the station's buffer holds
            status = self.control.status()
            size = int(status["buffer"]["size"])
        except Exception:  # noqa: BLE001
            status, size = {}, 1024
        # the newest result id taken into the tables (ids only grow; they continue across restarts)
        last = self.control.last_result()
        self.seen = last.result_id if last is not None else int(status.get("next_result_id") or 1) - 1
        self.waiting: deque[StationResult] = deque(maxlen=max(size, 1))
        self.dropped = 0                          # results lost here (acknowledge: auto and a slow PLC)
        self.local_overrun = False
        self.presented: StationResult | None = None
        self.triggers = self.refused = self.acks = 0
        self.coils[TRIGGER_ENABLE] = True        # In-Sight powers up with triggers enabled
        self.inputs[ONLINE] = True
        self.refresh()

    # ---- derived status

    def refresh(self) -> None:
        c = self.control
        state = c.state
        jobs = c.jobs
        self.registers[IR_JOB] = jobs.index(c.job) if c.job in jobs else 0xFFFF
        self.registers[IR_STATE] = STATE_CODES.get(state, 0xFFFF)
        online = not self.coils[SET_OFFLINE]
        self.inputs[ONLINE] = online
        self.inputs[ERROR_BIT] = state == "Error"
        self.inputs[BUSY] = bool(self.pending) or state in ("SingleExecution", "ContinuousExecution")
        self.inputs[TRIGGER_READY] = (online and self.coils[TRIGGER_ENABLE] and state == "Ready"
                                      and not self.inputs[TRIGGER_ACK])
        self.registers[IR_WAITING] = min(len(self.waiting) + (1 if self.presented else 0), 0xFFFF)

    def present(self) -> None:
        """Show the oldest unacknowledged result in the result registers."""
        if self.presented is not None or not self.waiting:
            return
        r = self.waiting.popleft()
        self.presented = r
        rid = r.result_id & 0xFFFFFFFF
        self.registers[IR_RESULT_ID] = rid >> 16
        self.registers[IR_RESULT_ID + 1] = rid & 0xFFFF
        self.registers[IR_RESULT_CODE] = RESULT_CODES.get(r.verdict, 0)
        names = self.adapter.params.measurements or list(r.measurements)[:self.slots]
        for i in range(self.slots):
            v = r.measurements.get(names[i], math.nan) if i < len(names) else math.nan
            hi, lo = float_registers(v)
            self.registers[IR_MEASUREMENTS + 2 * i] = hi
            self.registers[IR_MEASUREMENTS + 2 * i + 1] = lo
        self.inputs[JOB_PASS] = r.passed
        self.inputs[RESULTS_VALID] = True
        self.inputs[INSPECTION_COMPLETED] = not self.inputs[INSPECTION_COMPLETED]

    def missed_from_station(self) -> None:
        try:
            s = self.control.status()
        except Exception:  # noqa: BLE001
            return
        self.registers[IR_MISSED] = min(int(s.get("missed", 0)), 0xFFFF)
        self.inputs[BUFFER_OVERRUN] = bool(s.get("overrun")) or self.local_overrun

    def error(self, code: str) -> None:
        self.registers[IR_ERROR] = ERROR_CODES.get(code, OTHER_ERROR)

    # ---- PLC writes (pymodbus loop)

    def write_coils(self, address: int, values: list[bool]) -> None:
        before = list(self.coils)
        self.coils[address:address + len(values)] = [bool(v) for v in values]
        rising = [not before[i] and self.coils[i] for i in range(len(COILS))]
        falling = [before[i] and not self.coils[i] for i in range(len(COILS))]
        if falling[TRIGGER]:
            self.inputs[TRIGGER_ACK] = False
        if falling[EXECUTE_COMMAND]:
            self.inputs[COMMAND_COMPLETED] = self.inputs[COMMAND_FAILED] = False
        if rising[TRIGGER]:
            self.on_trigger()
        if rising[RESULTS_ACK]:
            self.on_ack()
        if rising[EXECUTE_COMMAND]:
            self.adapter.run_command(self.holding[HR_COMMAND], self.holding[HR_JOB])
        self.refresh()

    def on_trigger(self) -> None:
        if not self.coils[TRIGGER_ENABLE]:
            self.refused += 1
            self.error("trigger_disabled")
            return
        if self.coils[SET_OFFLINE]:
            self.refused += 1
            self.error("offline")
            return
        try:
            rid = self.control.trigger()
        except StationActionError as e:
            self.refused += 1
            self.error(e.code)
            if e.code == "buffer_full":
                self.inputs[BUFFER_OVERRUN] = True
            self.missed_from_station()
            return
        except Exception as e:  # noqa: BLE001 - a station fault must not take the server down
            log.warning("trigger failed: %s", e)
            self.refused += 1
            self.error("other")
            return
        self.triggers += 1
        self.pending.add(rid)
        self.inputs[TRIGGER_ACK] = True
        self.inputs[BUSY] = True

    def on_ack(self) -> None:
        r = self.presented
        if r is None:
            return
        try:
            self.control.acknowledge(r.result_id)
        except StationActionError as e:
            if e.code != "no_result":     # already released (another adapter, or evicted): move on
                self.error(e.code)
        self.acks += 1
        self.presented = None
        self.inputs[RESULTS_VALID] = False
        self.present()

    def command_done(self, ok: bool, code: str = "", name: str = "") -> None:
        if ok and name in ("reset", "reset_counters"):
            self.local_overrun = False
        if not ok:
            self.error(code)
        elif self.registers[IR_ERROR] in (ERROR_CODES["bad_command"], ERROR_CODES["unknown_job"]):
            self.registers[IR_ERROR] = 0
        self.missed_from_station()
        if self.coils[EXECUTE_COMMAND]:    # the PLC still holds the command: answer it
            self.inputs[COMMAND_COMPLETED] = ok
            self.inputs[COMMAND_FAILED] = not ok
        self.refresh()

    # ---- station events (adapter thread)

    def take(self, r: StationResult) -> None:
        """A new result (ids come in order): queue it for the PLC, show it if nothing is shown."""
        self.seen = r.result_id
        self.pending.discard(r.result_id)
        if len(self.waiting) == self.waiting.maxlen:
            # only with `acknowledge: auto` (else the station's buffer refuses first): the PLC is
            # too slow to take every result; the oldest unseen one is lost and that is flagged
            self.dropped += 1
            self.local_overrun = True
            self.inputs[BUFFER_OVERRUN] = True
        self.waiting.append(r)
        self.present()

    def catch_up(self) -> None:
        """The PLC reads while one of its triggers is in progress: take the results the station has
        published since the last one taken, without waiting for their events (skipped when they come)."""
        if not self.pending:
            return
        last = self.control.last_result()
        if last is None or last.result_id <= self.seen:
            return
        for rid in range(max(self.seen + 1, last.result_id - 1024), last.result_id + 1):
            r = self.control.result(rid)
            if r is not None:
                self.take(r if r.frame is None else dataclasses.replace(r, frame=None))
        self.seen = last.result_id
        self.refresh()

    def on_event(self, ev: StationEvent) -> None:
        if ev.kind == "result_ready" and ev.result is not None:
            if ev.result.result_id > self.seen:  # not yet taken by a PLC's read (catch_up)
                self.take(ev.result)
        elif ev.kind == "result_acknowledged" and ev.result is not None:
            rid = ev.result.result_id
            if self.presented is not None and self.presented.result_id == rid:
                self.presented = None
                self.inputs[RESULTS_VALID] = False
                self.present()
            else:
                for w in list(self.waiting):
                    if w.result_id == rid:
                        self.waiting.remove(w)
        elif ev.kind == "trigger_missed":
            # the event is queued: by now the PLC may have reset the counters, so the bit and the
            # count come from the station's present status, not from the event
            self.missed_from_station()
        elif ev.kind == "error":
            self.pending.clear()     # a frame that failed does not leave the PLC looking at Busy
        self.refresh()


class _Context:
    """A pymodbus device context over ``_Tables`` (classic ``ModbusBaseSlaveContext`` API of 3.9)."""

    _fx = {1: "c", 5: "c", 15: "c", 2: "d", 3: "h", 6: "h", 16: "h", 22: "h", 23: "h", 4: "i"}

    def __init__(self, tables: _Tables):
        self.t = tables

    def _table(self, fc: int) -> list:
        kind = self._fx[fc]
        return {"c": self.t.coils, "d": self.t.inputs, "h": self.t.holding, "i": self.t.registers}[kind]

    def reset(self) -> None:
        pass

    def getValues(self, fc: int, address: int, count: int = 1):  # noqa: N802 (pymodbus API)
        with self.t.lock:
            if fc in (2, 4):
                self.t.catch_up()
            table = self._table(fc)
            if address < 0 or count < 1 or address + count > len(table):
                return ILLEGAL_ADDRESS
            return list(table[address:address + count])

    def setValues(self, fc: int, address: int, values):  # noqa: N802 (pymodbus API)
        with self.t.lock:
            table = self._table(fc)
            values = list(values)
            if address < 0 or address + len(values) > len(table) or fc in (2, 4):
                return ILLEGAL_ADDRESS
            if table is self.t.coils:
                self.t.write_coils(address, values)
            else:
                table[address:address + len(values)] = [int(v) & 0xFFFF for v in values]
            return None

    async def async_getValues(self, fc: int, address: int, count: int = 1):  # noqa: N802
        return self.getValues(fc, address, count)

    async def async_setValues(self, fc: int, address: int, values):  # noqa: N802
        return self.setValues(fc, address, values)


class ModbusAdapter(LineAdapter):
    """Modbus TCP server with an In-Sight-style map of coils, inputs and registers."""

    scheme: ClassVar[str] = "modbus"
    description: ClassVar[str] = "Modbus TCP server (In-Sight-style trigger/result handshake), pymodbus"
    Params: ClassVar[type[ModbusParams]] = ModbusParams

    def __init__(self, target, params, control):
        super().__init__(target, params, control)
        try:
            self.host, self.port = parse_target(target, 502)
        except ValueError as exc:
            raise UsageError(f"io modbus:{target}: {exc}") from None
        self.name = f"modbus://{self.host}:{self.port}"
        self.spec = f"modbus:{target}"  # the station keys adapters by their spec
        self.tables: _Tables | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._clients = 0
        self._commands = 0

    @property
    def endpoint(self) -> str:
        return f"modbus://{self.host}:{self.port}"

    # ---- life cycle

    def start(self) -> None:
        self.tables = _Tables(self)
        self._thread = threading.Thread(target=self._run, name=f"loupe-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise OSError("the Modbus server did not start within 30 s")
        if self._error is not None:
            raise OSError(str(self._error)) from self._error
        self.control.set_adapter_connected(self.spec, False, "listening, no client")

    def _run(self) -> None:
        from pymodbus.datastore import ModbusServerContext
        from pymodbus.server import ModbusTcpServer

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main():
            ctx = ModbusServerContext(slaves={self.params.device_id: _Context(self.tables)}, single=False) \
                if self.params.device_id else ModbusServerContext(slaves=_Context(self.tables), single=True)
            self._server = ModbusTcpServer(ctx, address=(self.host, self.port), trace_connect=self._on_connect)
            try:
                await self._server.serve_forever(background=True)
                if self._server.transport is None:
                    raise OSError(f"cannot listen on {self.host}:{self.port}")
                socks = getattr(self._server.transport, "sockets", None)
                if socks:
                    self.port = socks[0].getsockname()[1]
                    self.name = f"modbus://{self.host}:{self.port}"
            except BaseException as e:  # noqa: BLE001 - reported to start()
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            await self._server.serving

        try:
            loop.run_until_complete(main())
        except Exception as e:  # noqa: BLE001
            log.warning("%s: server stopped: %s", self.name, e)
        finally:
            self._ready.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _on_connect(self, connected: bool) -> None:
        """pymodbus reports connects twice and disconnects once: count its live connections instead,
        once the loop has finished the bookkeeping of this one."""
        if self._loop is not None:
            self._loop.call_soon(self._count_clients)

    def _count_clients(self) -> None:
        server = self._server
        n = len(getattr(server, "active_connections", {}) or {}) if server is not None else 0
        if n == self._clients:
            return
        self._clients = n
        try:
            self.control.set_adapter_connected(self.spec, n > 0, f"{n} client(s)" if n else "no client")
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(5)
            except Exception:  # noqa: BLE001
                pass
        if self._thread is not None:
            self._thread.join(5)

    # ---- events and commands

    def on_event(self, event: StationEvent) -> None:
        t = self.tables
        if t is None:
            return
        with t.lock:
            t.on_event(event)

    def run_command(self, code: int, job_id: int) -> None:
        """Run a PLC command off the Modbus loop (a reload may take a while)."""
        self._commands += 1
        name = COMMANDS.get(code)
        t = self.tables

        def work():
            try:
                if name is None:
                    raise StationActionError("bad_command", f"unknown command code {code}")
                if name == "select_job":
                    jobs = self.control.jobs
                    if not 0 <= job_id < len(jobs):
                        raise StationActionError("unknown_job", f"job id {job_id} (jobs 0..{len(jobs) - 1})")
                    self.control.select_job(jobs[job_id])
                else:
                    getattr(self.control, name)()
            except StationActionError as e:
                with t.lock:
                    t.command_done(False, e.code)
            except Exception as e:  # noqa: BLE001
                log.warning("%s: command %s failed: %s", self.name, code, e)
                with t.lock:
                    t.command_done(False, "other")
            else:
                with t.lock:
                    t.command_done(True, name=name)

        threading.Thread(target=work, name=f"{self.name}-command", daemon=True).start()

    def stats(self) -> dict[str, Any]:
        t = self.tables
        return {"clients": self._clients, "triggers": t.triggers if t else 0, "refused": t.refused if t else 0,
                "acks": t.acks if t else 0, "dropped": t.dropped if t else 0, "commands": self._commands,
                "time": time.time()}
