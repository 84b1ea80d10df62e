"""``opcua://HOST:PORT``: an OPC UA server (asyncua) modelled on OPC 40100-1 (Machine Vision).

A faithful *subset* of the MachineVision information model, with the
specification's browse names where a node has one (namespace
``http://opcfoundation.org/UA/MachineVision`` is not imported; the nodes live
in Loupe's own namespace ``urn:loupe:station``)::

    Objects/VisionSystem                              (EventNotifier: ResultReadyEventType events)
      State, CurrentJob, Jobs, MissedTriggers, BufferOverrun, ResultsWaiting   (Loupe)
      VisionStateMachine/
        CurrentState
        Reset()
        AutomaticModeStateMachine/
          CurrentState
          StartSingleJob() -> JobId                   (JobId: the result id of the trigger)
          StartContinuous()
          Stop()
      RecipeManagement/
        SelectJob(JobId)                              (Loupe: the station's job = In-Sight's job)
        Reload()
      ResultManagement/
        ResultAcknowledge(ResultId)                   ("" = the oldest unacknowledged)
        ResetCounters()
        LastResult/
          ResultId, ResultState, IsPartGood, Verdict, InternalRecipeId, CreationTime,
          ProcessingTimes/{StartTime, EndTime, ProcessingDuration}, MeasurementNames,
          MeasurementValues, Failures

A refused action is the call's status code: ``BadInvalidState`` (busy, not
ready), ``BadResourceUnavailable`` (buffer full), ``BadInvalidArgument``
(unknown job, bad result id), ``BadConfigurationError`` (a bad recipe on
reload), ``BadNoData`` (nothing to acknowledge).

asyncua runs in its own thread with its own event loop. StartSingleJob,
StartContinuous, ResultAcknowledge and ResetCounters run on that loop (the
station's actions return at once); SelectJob, Stop, Reset and Reload, which may
wait for the frame in progress, on asyncua's worker threads;
station events are handed to that loop as they happen (``direct_events``: no
queue thread; the backlog is bounded and counted) and copied into the address
space there, so an OPC UA client never delays inspection.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import ipaddress
import logging
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from host import LineAdapter, Params, StationActionError, StationEvent, StationResult, UsageError

log = logging.getLogger("loupe.line.opcua")

NAMESPACE = "urn:loupe:station"
_UNSET = object()
#: OPC 40100-1 ResultStateDataType (Int32): 1 OK, 2 NOK, 3 not decidable; negative values are vendor errors
RESULT_STATES = {"pass": 1, "fail": 2, "review": 3, "error": -1}
SECURITY = {"none": "NoSecurity", "sign": "Basic256Sha256_Sign", "sign-encrypt": "Basic256Sha256_SignAndEncrypt"}


class OpcUaParams(Params):
    security: list[Literal["none", "sign", "sign-encrypt"]] = Field(
        default_factory=lambda: ["none"], min_length=1,
        description="endpoints offered: none, sign, sign-encrypt (Basic256Sha256, self-signed certificate)")
    username: str | None = Field(None, description="accept this user (username/password identity token)")
    password: str | None = Field(None, description="the user's password (or set password_env)")
    password_env: str | None = Field(None, description="read the password from this environment variable")
    anonymous: bool | None = Field(None, description="accept anonymous clients (default: only when listening on "
                                                     "loopback and no username is set)")
    cert_dir: str | None = Field(None, description="where the server's key and self-signed certificate are kept "
                                                   "(default: opcua-pki/ beside the station file)")
    measurements: list[str] = Field(default_factory=list, description="measurements published in LastResult and "
                                                                      "the event (default: every numeric one)")


def parse_target(target: str, default_port: int = 4840) -> tuple[str, int]:
    t = target[2:] if target.startswith("//") else target
    t = t.split("/", 1)[0]
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = t, ""
    host = host.strip("[]") or "127.0.0.1"
    if port and (not port.isdigit() or not 0 <= int(port) <= 65535):
        raise ValueError("the port must be a number 0-65535 (//HOST:PORT)")
    return host, int(port) if port else default_port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def numeric(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return numeric(v.item())
    return None


def status_for(code: str):
    from asyncua import ua

    return ua.StatusCode({
        "busy": ua.StatusCodes.BadInvalidState, "not_ready": ua.StatusCodes.BadInvalidState,
        "buffer_full": ua.StatusCodes.BadResourceUnavailable, "unknown_job": ua.StatusCodes.BadInvalidArgument,
        "bad_argument": ua.StatusCodes.BadInvalidArgument, "bad_recipe": ua.StatusCodes.BadConfigurationError,
        "no_result": ua.StatusCodes.BadNoData,
    }.get(code, ua.StatusCodes.BadInternalError))


class OpcUaAdapter(LineAdapter):
    """OPC UA server after OPC 40100-1: methods, state and last-result variables, a ResultReady event."""

    scheme: ClassVar[str] = "opcua"
    description: ClassVar[str] = "OPC UA server modelled on OPC 40100-1 (Machine Vision), asyncua"
    Params: ClassVar[type[OpcUaParams]] = OpcUaParams
    #: ``on_event`` only hands the event to the server's loop (``_backlog`` bounds it)
    direct_events: ClassVar[bool] = True

    def __init__(self, target, params, control):
        super().__init__(target, params, control)
        try:
            self.host, self.port = parse_target(target)
        except ValueError as exc:
            raise UsageError(f"io opcua:{target}: {exc}") from None
        self.name = f"opcua://{self.host}:{self.port}"
        self.spec = f"opcua:{target}"  # the station keys adapters by their spec
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server = None
        self._nodes: dict[str, Any] = {}
        self._written: dict[str, Any] = {}
        self._event = None
        self._sessions = 0
        self.events_sent = 0
        self._backlog = 0                   # events handed to the loop and not yet applied
        self._backlog_lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/loupe/"

    # ---- configuration

    def _password(self) -> str | None:
        p = self.params
        if p.password is not None:
            return p.password
        if p.password_env:
            return os.environ.get(p.password_env)
        return None

    def _anonymous(self) -> bool:
        p = self.params
        if p.anonymous is not None:
            return p.anonymous
        return p.username is None and is_loopback(self.host)

    def _cert_dir(self) -> Path:
        base = self.control.base_dir
        d = Path(self.params.cert_dir) if self.params.cert_dir else Path("opcua-pki")
        return d if d.is_absolute() else Path(base) / d

    def _check(self) -> None:
        p = self.params
        where = f"io {self.spec}"
        if p.username is not None and self._password() is None:
            raise UsageError(f"{where}: username {p.username!r} needs a password (password, or password_env "
                             f"naming a set environment variable)")
        if not self._anonymous() and p.username is None:
            if not is_loopback(self.host) and p.anonymous is None:
                raise UsageError(f"{where}: anonymous access is allowed on loopback only: set a username "
                                 f"(and password) or anonymous: true")
            raise UsageError(f"{where}: no identity accepted (anonymous: false and no username)")

    # ---- life cycle

    def start(self) -> None:
        self._check()
        if self.params.username is not None and self.params.security == ["none"]:
            log.warning("%s: username/password on an unsecured endpoint only: the password may cross the "
                        "network in clear; add security: [sign-encrypt]", self.spec)
        self._thread = threading.Thread(target=self._run, name=f"loupe-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(120):
            raise OSError("the OPC UA server did not start within 120 s")
        if self._error is not None:
            raise OSError(f"cannot serve on {self.host}:{self.port}: {self._error}") from self._error
        self.control.set_adapter_connected(self.spec, False, "listening, no session")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._error = self._error or e
            if self._ready.is_set():
                log.warning("%s: server stopped: %s", self.name, e)
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        from asyncua import Server, ua
        from asyncua.crypto.permission_rules import User, UserRole

        adapter = self

        class _Users:
            def get_user(self, iserver, username=None, password=None, certificate=None):
                if username is None:
                    return User(role=UserRole.User) if adapter._anonymous() else None
                expected = adapter._password() or ""
                if username == adapter.params.username and hmac.compare_digest(
                        str(password or "").encode(), expected.encode()):
                    return User(role=UserRole.User)
                return None

        self._stop = asyncio.Event()
        server = Server(user_manager=_Users())
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("Loupe station")
        await server.set_application_uri("urn:loupe:station:server")
        policies = [getattr(ua.SecurityPolicyType, SECURITY[s]) for s in self.params.security]
        server.set_security_policy(policies)
        tokens = []
        if self._anonymous():
            tokens.append(ua.AnonymousIdentityToken)
        if self.params.username is not None:
            tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)
        if any(s != "none" for s in self.params.security):
            await self._certificate(server)
        idx = await server.register_namespace(NAMESPACE)
        await self._build(server, idx)
        self._server = server
        await server.start()
        if self.port == 0:
            self.port = server.bserver.port
            self.name = f"opcua://{self.host}:{self.port}"
        watcher = asyncio.ensure_future(self._watch_sessions(server))
        self._ready.set()
        log.info("opcua adapter listening on %s", self.endpoint)
        try:
            await self._stop.wait()
        finally:
            watcher.cancel()
            await server.stop()

    async def _certificate(self, server) -> None:
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID

        d = self._cert_dir()
        d.mkdir(parents=True, exist_ok=True)
        key, cert = d / "server-key.pem", d / "server-cert.der"
        await setup_self_signed_certificate(key, cert, "urn:loupe:station:server", socket.gethostname(),
                                            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                                            {"commonName": "Loupe station", "organizationName": "Loupe"})
        os.chmod(key, 0o600)
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))

    async def _build(self, server, idx: int) -> None:
        from asyncua import ua
        from asyncua.common.methods import uamethod

        c = self.control
        n = self._nodes
        objects = server.nodes.objects
        vs = await objects.add_object(idx, "VisionSystem")
        await vs.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        n["VisionSystem"] = vs
        n["State"] = await vs.add_variable(idx, "State", c.state, ua.VariantType.String)
        n["CurrentJob"] = await vs.add_variable(idx, "CurrentJob", c.job, ua.VariantType.String)
        n["Jobs"] = await vs.add_variable(idx, "Jobs", list(c.jobs), ua.VariantType.String)
        n["MissedTriggers"] = await vs.add_variable(idx, "MissedTriggers", 0, ua.VariantType.UInt32)
        n["BufferOverrun"] = await vs.add_variable(idx, "BufferOverrun", False, ua.VariantType.Boolean)
        n["ResultsWaiting"] = await vs.add_variable(idx, "ResultsWaiting", 0, ua.VariantType.UInt32)

        def action(fn, quick: bool = False, refresh: bool = True):
            """A method body that maps StationActionError onto a Bad status code, then copies the
            station's status into the address space (counters no event announces: reset_counters).

            ``quick`` actions (trigger, acknowledge: they return at once) run on the server's loop;
            the others (select job, stop, reset, reload may wait for the frame in progress) run on
            asyncua's worker threads."""
            def body(*args):
                try:
                    return fn(*args)
                except StationActionError as e:
                    log.info("%s: %s refused: %s", self.name, fn.__name__, e)
                    return status_for(e.code)

            if quick:
                async def call(parent, *args):
                    out = body(*args)
                    if refresh or isinstance(out, ua.StatusCode):   # refused (counters), or no event tells
                        try:
                            await self._status(self.control.status())
                        except Exception as e:  # noqa: BLE001
                            log.debug("%s: status refresh failed: %s", self.name, e)
                    return out
            else:
                def call(parent, *args):
                    try:
                        return body(*args)
                    finally:
                        self._refresh_now()
            call.__name__ = fn.__name__
            return uamethod(call)

        def arg(name: str, vtype, doc: str = ""):
            a = ua.Argument()
            a.Name = name
            a.DataType = ua.NodeId(vtype)
            a.ValueRank = -1
            a.Description = ua.LocalizedText(doc)
            return a

        def start_single_job():
            return str(c.trigger())

        def start_continuous():
            c.start_continuous()

        def stop():
            c.stop_continuous()

        def reset():
            c.reset()

        def select_job(job: str):
            if job not in c.jobs:
                raise StationActionError("unknown_job", f"unknown job {job!r}")
            c.select_job(job)

        def reload():
            c.reload()

        def result_acknowledge(result_id: str):
            rid = (result_id or "").strip()
            if rid and not rid.isdigit():
                raise StationActionError("bad_argument", f"ResultId {result_id!r} is not a result id")
            c.acknowledge(int(rid) if rid else None)

        def reset_counters():
            c.reset_counters()

        vsm = await vs.add_object(idx, "VisionStateMachine")
        n["VisionStateMachine.CurrentState"] = await vsm.add_variable(idx, "CurrentState", c.state,
                                                                      ua.VariantType.String)
        await vsm.add_method(idx, "Reset", action(reset), [], [])
        amsm = await vsm.add_object(idx, "AutomaticModeStateMachine")
        n["AutomaticModeStateMachine.CurrentState"] = await amsm.add_variable(idx, "CurrentState", c.state,
                                                                              ua.VariantType.String)
        await amsm.add_method(idx, "StartSingleJob", action(start_single_job, quick=True, refresh=False), [],
                              [arg("JobId", ua.ObjectIds.String, "the result id of this trigger")])
        await amsm.add_method(idx, "StartContinuous", action(start_continuous, quick=True, refresh=False), [], [])
        await amsm.add_method(idx, "Stop", action(stop), [], [])
        rm = await vs.add_object(idx, "RecipeManagement")
        await rm.add_method(idx, "SelectJob", action(select_job),
                            [arg("JobId", ua.ObjectIds.String, "a job id of the station")], [])
        await rm.add_method(idx, "Reload", action(reload), [], [])
        res = await vs.add_object(idx, "ResultManagement")
        await res.add_method(idx, "ResultAcknowledge", action(result_acknowledge, quick=True, refresh=False),
                             [arg("ResultId", ua.ObjectIds.String, "empty: the oldest unacknowledged result")], [])
        await res.add_method(idx, "ResetCounters", action(reset_counters, quick=True), [], [])
        last = await res.add_object(idx, "LastResult")
        epoch = dt.datetime.fromtimestamp(0, dt.timezone.utc)
        for name, value, vt in (("ResultId", "", ua.VariantType.String), ("ResultState", 0, ua.VariantType.Int32),
                                ("IsPartGood", False, ua.VariantType.Boolean), ("Verdict", "", ua.VariantType.String),
                                ("InternalRecipeId", "", ua.VariantType.String),
                                ("CreationTime", epoch, ua.VariantType.DateTime),
                                ("MeasurementNames", [], ua.VariantType.String),
                                ("MeasurementValues", [], ua.VariantType.Double),
                                ("Failures", [], ua.VariantType.String)):
            n[f"LastResult.{name}"] = await last.add_variable(idx, name, value, vt)
        pt = await last.add_object(idx, "ProcessingTimes")
        for name, value, vt in (("StartTime", epoch, ua.VariantType.DateTime),
                                ("EndTime", epoch, ua.VariantType.DateTime),
                                ("ProcessingDuration", 0.0, ua.VariantType.Double)):
            n[f"ProcessingTimes.{name}"] = await pt.add_variable(idx, name, value, vt)

        etype = await server.create_custom_event_type(idx, "ResultReadyEventType", ua.ObjectIds.BaseEventType, [
            ("ResultId", ua.VariantType.String), ("ResultState", ua.VariantType.Int32),
            ("IsPartGood", ua.VariantType.Boolean), ("Verdict", ua.VariantType.String),
            ("InternalRecipeId", ua.VariantType.String), ("CreationTime", ua.VariantType.DateTime),
            ("ProcessingDuration", ua.VariantType.Double), ("MeasurementNames", ua.VariantType.String),
            ("MeasurementValues", ua.VariantType.Double)])
        self._event = await server.get_event_generator(etype, vs)

    async def _watch_sessions(self, server) -> None:
        """asyncua has no connect/disconnect hook: poll its connection list (twice a second)."""
        while True:
            try:
                count = len(server.bserver.clients)
                if count != self._sessions:
                    self._sessions = count
                    self.control.set_adapter_connected(self.spec, count > 0,
                                                       f"{count} client(s)" if count else "no client")
            except Exception:  # noqa: BLE001
                pass
            await asyncio.sleep(0.5)

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        deadline = time.monotonic() + 2.0   # the station's last events (the final result's) go out first
        while self._backlog and time.monotonic() < deadline and self._thread is not None and self._thread.is_alive():
            time.sleep(0.005)
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(10)

    # ---- station events -> address space

    def on_event(self, event: StationEvent) -> bool | None:
        """On the station's thread (``direct_events``): hand the event to the server's loop, at most
        ``queue_size`` of them waiting; ``False`` when that many already wait (counted as dropped)."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._server is None:
            return None
        with self._backlog_lock:
            if self._backlog >= self.queue_size:
                return False
            self._backlog += 1
        try:
            loop.call_soon_threadsafe(self._take, event)
        except RuntimeError:  # the loop closed meanwhile
            self._done()
            return None
        return True

    def _done(self) -> None:
        with self._backlog_lock:
            self._backlog -= 1

    def _take(self, event: StationEvent) -> None:
        """On the server's loop, in the station's order: publish the event (nothing in it awaits I/O, so
        each event's task runs to its end before the next one starts)."""
        task = asyncio.ensure_future(self._apply_event(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply_event(self, event: StationEvent) -> None:
        try:
            if event.kind == "result_ready" and event.result is not None:
                await self._publish(event.result)   # the result first: it is what a PLC waits for
            try:
                status = self.control.status()
            except Exception:  # noqa: BLE001
                status = {}
            await self._status(status or {"state": event.state, "job": event.job})
        except Exception as e:  # noqa: BLE001 - an address-space hiccup must not stop the next events
            log.warning("%s: event %s not published: %s", self.name, event.kind, e)
        finally:
            self._done()

    async def _write(self, key: str, value, vt, always: bool = False) -> None:
        """Write one variable directly into the address space (asyncua's fast path); a status
        variable whose value did not change is not written again."""
        from asyncua import ua

        if not always and self._written.get(key, _UNSET) == value:
            return
        self._written[key] = value
        dv = ua.DataValue(ua.Variant(value, vt), SourceTimestamp=dt.datetime.now(dt.timezone.utc))
        await self._server.write_attribute_value(self._nodes[key].nodeid, dv)

    def _refresh_now(self) -> None:
        """Copy the station's status into the address space (from a method's worker thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            status = self.control.status()
            asyncio.run_coroutine_threadsafe(self._status(status), loop).result(5)
        except Exception as e:  # noqa: BLE001
            log.debug("%s: status refresh failed: %s", self.name, e)

    async def _status(self, status: dict) -> None:
        from asyncua import ua

        w = self._write
        state = status.get("state")
        if state:
            for key in ("State", "VisionStateMachine.CurrentState", "AutomaticModeStateMachine.CurrentState"):
                await w(key, state, ua.VariantType.String)
        if status.get("job"):
            await w("CurrentJob", status["job"], ua.VariantType.String)
        await w("MissedTriggers", min(int(status.get("missed", 0)), 2**32 - 1), ua.VariantType.UInt32)
        await w("BufferOverrun", bool(status.get("overrun")), ua.VariantType.Boolean)
        waiting = int((status.get("buffer") or {}).get("unacknowledged", 0))
        await w("ResultsWaiting", waiting, ua.VariantType.UInt32)

    def _values(self, r: StationResult) -> tuple[list[str], list[float]]:
        names = self.params.measurements or [k for k, v in r.measurements.items() if numeric(v) is not None]
        values = []
        for k in names:
            v = numeric(r.measurements.get(k))
            values.append(math.nan if v is None else v)
        return list(names), values

    async def _publish(self, r: StationResult) -> None:
        """The ResultReady event first, sent at once (it is what a PLC waits for), then LastResult. Nothing
        in between awaits I/O, so no client request is served before LastResult holds this result."""
        from asyncua import ua

        names, values = self._values(r)
        created = dt.datetime.fromtimestamp(r.created, dt.timezone.utc)
        total = float(r.processing_ms.get("total", sum(r.processing_ms.values()) if r.processing_ms else 0.0))
        end = created + dt.timedelta(milliseconds=total)
        state = RESULT_STATES.get(r.verdict, 0)
        gen = self._event
        e = gen.event
        e.ResultId = str(r.result_id)
        e.ResultState = state
        e.IsPartGood = r.passed
        e.Verdict = r.verdict
        e.InternalRecipeId = r.job
        e.CreationTime = created
        e.ProcessingDuration = total
        e.MeasurementNames = ua.Variant(names, ua.VariantType.String)
        e.MeasurementValues = ua.Variant(values, ua.VariantType.Double)
        await gen.trigger(message=f"result {r.result_id}: {r.verdict}")
        self.events_sent += 1
        await self._publish_now()
        for key, value, vt in (("LastResult.ResultId", str(r.result_id), ua.VariantType.String),
                               ("LastResult.ResultState", state, ua.VariantType.Int32),
                               ("LastResult.IsPartGood", r.passed, ua.VariantType.Boolean),
                               ("LastResult.Verdict", r.verdict, ua.VariantType.String),
                               ("LastResult.InternalRecipeId", r.job, ua.VariantType.String),
                               ("LastResult.CreationTime", created, ua.VariantType.DateTime),
                               ("LastResult.MeasurementNames", names, ua.VariantType.String),
                               ("LastResult.MeasurementValues", values, ua.VariantType.Double),
                               ("LastResult.Failures", [str(f) for f in r.failures], ua.VariantType.String),
                               ("ProcessingTimes.StartTime", created, ua.VariantType.DateTime),
                               ("ProcessingTimes.EndTime", end, ua.VariantType.DateTime),
                               ("ProcessingTimes.ProcessingDuration", total, ua.VariantType.Double)):
            await self._write(key, value, vt, always=True)

    async def _publish_now(self) -> None:
        """Send ResultReady to its subscribers now rather than at their next publishing cycle: a PLC's
        publishing interval (often 50-500 ms) then bounds how often it hears keep-alives and data
        changes, not how late it hears of a result. asyncua publishes at once only for interval 0,
        which its own client then takes for a stale subscription (no keep-alive within 1 s)."""
        try:
            subs = list(self._server.iserver.subscription_service.subscriptions.values())
        except AttributeError:  # another asyncua: its subscriptions keep their own cycle
            return
        for sub in subs:
            if getattr(sub, "_triggered_events", None):
                await sub.publish_results()  # no Publish request queued: it goes out with the next one
