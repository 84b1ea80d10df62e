"""Contracts of the line: what a station offers its adapters, and what an adapter is.

A station (``loupe serve``) owns the per-frame path. Everything that talks to the
line — a PLC over OPC UA, Modbus TCP or a TCP ASCII channel, a message bus, the
operator screen — is a ``LineAdapter`` registered through the
``loupe_line_adapter`` hook. An adapter acts only through the
``StationControl`` handle it is given, and hears what happens through
``LineAdapter.on_event``, called on the adapter's own thread from a bounded
queue: a slow or disconnected client never delays inspection.

The station's states follow OPC 40100-1 (OPC UA for Machine Vision):
``Initialized -> Ready <-> SingleExecution | ContinuousExecution``, plus
``Error``, left with ``reset()``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from .contracts import NoParams
from .types import FrameResult

# OPC 40100-1 states (the names are the specification's)
INITIALIZED, READY, SINGLE, CONTINUOUS, ERROR_STATE = (
    "Initialized", "Ready", "SingleExecution", "ContinuousExecution", "Error")
STATION_STATES = (INITIALIZED, READY, SINGLE, CONTINUOUS, ERROR_STATE)

# event kinds
STATE_CHANGED, RESULT_READY, JOB_CHANGED, STATION_ERROR, TRIGGER_MISSED, RESULT_ACKNOWLEDGED = (
    "state_changed", "result_ready", "job_changed", "error", "trigger_missed", "result_acknowledged")


@dataclass(slots=True)
class StationResult:
    """One trigger's result, as the line sees it.

    ``result_id`` increases by one per trigger and is never reused, across
    restarts too. ``measurements`` is flat (``"step.name" -> value``) in the
    recipe's order, so adapters can map the first N onto registers or a reply
    line. ``frame`` is the full ``FrameResult`` (image, overlays, heatmaps) for
    adapters that draw (the operator screen); it must not be modified.
    """

    result_id: int
    job: str
    verdict: str
    measurements: dict[str, Any]
    failures: list[str]
    created: float                      # wall time (epoch seconds) the trigger was taken
    processing_ms: dict[str, float]     # per-step times
    frame: FrameResult | None = None
    acknowledged: bool = False

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


@dataclass(slots=True)
class StationEvent:
    """Something an adapter is told about. ``kind`` is one of the event kinds above.

    ``state`` is the station state after the event; ``result`` is set for
    ``result_ready``/``result_acknowledged``; ``job`` for ``job_changed``;
    ``message`` for ``error`` and ``trigger_missed``.
    """

    kind: str
    state: str
    job: str
    time: float
    result: StationResult | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class StationControl(ABC):
    """The handle a line adapter gets: the station's actions and read-only status.

    Every action is thread-safe and returns quickly; none of them runs an
    inspection on the caller's thread. Actions that the current state does not
    allow raise ``host.StationActionError`` (with a short ``code`` an adapter can
    map onto its protocol's error reply).
    """

    # ---- status (cheap reads)

    @property
    @abstractmethod
    def state(self) -> str:
        """The current OPC 40100-1 state name."""

    @property
    @abstractmethod
    def job(self) -> str:
        """The current job id."""

    @property
    @abstractmethod
    def jobs(self) -> list[str]:
        """Every job id of the station."""

    @property
    def base_dir(self) -> Path:
        """The station file's folder: where an adapter keeps its files (keys, certificates).
        The default is the current directory."""
        return Path.cwd()

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot: state, job, counts per verdict, results issued,
        buffer fill and size, missed triggers, overruns, adapters and their
        connection state, alarms."""

    @abstractmethod
    def last_result(self) -> StationResult | None:
        """The newest result, acknowledged or not."""

    @abstractmethod
    def result(self, result_id: int) -> StationResult | None:
        """A result still held by the station (buffer or recent history), else ``None``."""

    # ---- actions

    @abstractmethod
    def trigger(self, acknowledge: bool = False) -> int:
        """Start a single job (software trigger). Returns the new result id at once;
        the result arrives later as a ``result_ready`` event (or through
        ``wait_result``). Raises when a trigger cannot be taken (not ready, buffer
        full): that trigger is counted as missed and reported. ``acknowledge``: the
        caller takes the result as it is published (a reply that carries it, such as
        TCP's to ``TRG``), so it is released at once and never waits in the buffer."""

    @abstractmethod
    def wait_result(self, result_id: int, timeout: float | None = None) -> StationResult | None:
        """Block the *caller* until ``result_id`` is ready (``None`` on timeout)."""

    @abstractmethod
    def start_continuous(self) -> None:
        """Enter ContinuousExecution (free-run or hardware-triggered frames)."""

    @abstractmethod
    def stop_continuous(self) -> None:
        """Back to Ready after the frame in progress."""

    @abstractmethod
    def select_job(self, job: str) -> None:
        """Change job (only in Ready). The job's pipeline was built at start-up."""

    @abstractmethod
    def acknowledge(self, result_id: int | None = None) -> None:
        """Release a result (the oldest unacknowledged one when ``None``) from the buffer."""

    @abstractmethod
    def reset(self) -> None:
        """Leave Error (or abort), back to Ready; clears the error alarm."""

    @abstractmethod
    def reload(self) -> None:
        """Re-read and validate every job's recipe; a bad recipe is refused and the
        old pipelines are kept (raises ``StationActionError`` with the reason)."""

    @abstractmethod
    def reset_counters(self) -> None:
        """Zero the counts per verdict and the missed-trigger counter."""

    @abstractmethod
    def set_adapter_connected(self, adapter: str, connected: bool, detail: str = "") -> None:
        """An adapter tells the station whether its client/broker is connected
        (shown as an alarm on the operator screen when not). ``adapter`` is the adapter's
        spec, ``f"{self.scheme}:{self.target}"`` (the key of ``status()["adapters"]``)."""

    # ---- optional (additive): what screens and dashboards show

    @property
    def base_dir(self) -> Path:
        """Where relative paths in an adapter's options resolve (the station file's folder)."""
        return Path.cwd()

    def describe_job(self, job: str) -> dict[str, Any]:
        """A job's recipe as a screen shows it: ``{"job", "recipe", "hash", "steps": [{"name",
        "tool", "required", "limits": {measurement: {min, max, review_min, ...}}}]}``."""
        return {"job": job, "recipe": "", "hash": "", "steps": []}


class LineAdapter(ABC):
    """A station's link to the line (PLC protocol, bus, screen).

    ``scheme`` names it in specs (``opcua://HOST:PORT`` -> ``opcua``). ``Params``
    validates the options of a station's ``io`` entry (``{spec: ..., key: value}``).
    The station builds the adapter with the spec's target (``//HOST:PORT...``),
    its params and the control handle, calls ``start()`` once every pipeline is
    built, feeds ``on_event`` from the adapter's own queue thread, and calls
    ``close()`` at shutdown (within a few seconds: close servers, drop clients).
    """

    scheme: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    #: how many events may wait for this adapter before new ones are counted as dropped
    queue_size: ClassVar[int] = 1024
    #: whether events carry ``StationResult.frame`` (the image, overlays): only adapters that
    #: draw (the operator screen) need it; the others get ``frame=None`` and hold no images
    wants_frames: ClassVar[bool] = False
    #: the event kinds this adapter is told of (``None``: every kind); the others are not queued for it,
    #: which spares a busy line a thread wake-up per event nobody reads
    event_kinds: ClassVar[frozenset[str] | None] = None
    #: ``True`` for an adapter whose ``on_event`` returns at once: it hands the event to a thread or event loop
    #: of its own, or makes at most one non-blocking send; it takes no lock another thread holds across I/O
    #: and makes no call back into the station. The station then calls it
    #: where the event happens (under the station's lock, in order) instead of from a queue thread, which
    #: spares every event a thread hand-over. Such an adapter bounds its own backlog (``queue_size``) and
    #: returns ``False`` for an event it had to drop; the station counts it as dropped.
    direct_events: ClassVar[bool] = False
    #: where the station runs the adapter unless a station's ``io`` entry says (``process: own|shared``):
    #: ``"own"`` is a child process (``host.core.line_process``) with a control handle that relays the actions
    #: and answers reads from a copy the events keep current. For a protocol server whose clients poll it
    #: often: their requests are then served off the station's interpreter lock. Not for adapters that
    #: want frames.
    process: ClassVar[str] = "shared"

    def __init__(self, target: str, params: BaseModel, control: StationControl):
        self.target = target
        self.params = params
        self.control = control

    @property
    def endpoint(self) -> str:
        """Where the adapter listens, once started (``tcp://127.0.0.1:40113`` when port 0 was asked);
        ``loupe serve`` prints it."""
        return f"{self.scheme}:{self.target}"

    @abstractmethod
    def start(self) -> None:
        """Open the server or connection (non-blocking: start its own thread/loop)."""

    def on_event(self, event: StationEvent) -> bool | None:
        """Called on this adapter's own thread, in order, for every event it did not miss (with
        ``direct_events``: on the station's thread, and ``False`` means the adapter dropped it)."""

    def close(self) -> None:
        """Stop serving and release sockets."""
