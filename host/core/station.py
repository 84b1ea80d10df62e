"""Stations: a deployed inspection that the line drives (``loupe serve``).

A station file (schema version 1)::

    loupe_station: 1
    name: line-1
    jobs:                                   # job id -> recipe (models stay pinned by sha256 there)
      coins: coins.yaml
      washers: {recipe: washers.yaml, hash: 3f2a...}   # optionally pin the recipe's canonical hash
    job: coins                              # the job at start (default: the first)
    source: folder:images                   # or {spec: folder:images, pattern: "*.png"}
    trigger: software                       # free-run | software | source
    io:                                     # line adapters (loupe_line_adapter hook)
      - tcp://127.0.0.1:2000
      - {spec: opcua://127.0.0.1:4840, username: op, password: secret}
    store: [sqlite:results.sqlite]          # any report spec (default: sqlite:<stem>-results.sqlite)
    buffer: 16                              # results held until acknowledged
    acknowledge: manual                     # manual (an adapter acknowledges) | auto
    hmi: {listen: 127.0.0.1:8080}           # the operator screen (needs loupe-hmi)

The ``Station`` is the state machine of OPC 40100-1 (``Initialized -> Ready <->
SingleExecution | ContinuousExecution``, ``Error`` left with ``reset``) and the
``StationControl`` handle its adapters get. One inspection thread owns the
per-frame path: it takes a frame from the source, runs the current job's
pipeline (every job's pipeline is built at start-up), writes the stores, then
publishes. Each adapter hears events from its own bounded queue on its own
thread, so a slow or disconnected client never delays inspection.

Result ids increase by one per trigger and are never reused: they are reserved
in blocks in a small state file written with fsync, so after a ``kill -9`` the
next id continues above every id that could have been issued.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .contracts import Reporter, RunInfo, Source
from .errors import RecipeError, StationActionError, UsageError
from .line import (CONTINUOUS, ERROR_STATE, INITIALIZED, JOB_CHANGED, READY, RESULT_ACKNOWLEDGED, RESULT_READY,
                   SINGLE, STATE_CHANGED, STATION_ERROR, TRIGGER_MISSED, LineAdapter, StationControl,
                   StationEvent, StationResult)
from .line_process import ProcessAdapter
from .recipe import Recipe, SourceDoc
from .types import ERROR, FAIL, PASS, REVIEW, Frame, FrameResult

log = logging.getLogger("loupe.station")

SCHEMA_VERSION = 1
MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 24
MAX_NODES = 20_000
JOB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TRIGGERS = ("free-run", "software", "source")


# ------------------------------------------------------------------ the file


class JobDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipe: str
    hash: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                             description="the recipe's canonical hash (loupe validate prints it); checked at load")


class IoDoc(BaseModel):
    model_config = ConfigDict(extra="allow")
    spec: str


class HmiDoc(BaseModel):
    """``hmi: {listen: HOST:PORT, ...}``: the operator screen; other keys are the screen's options."""

    model_config = ConfigDict(extra="allow")
    listen: str = Field(pattern=r"^[^\s:]*:\d{1,5}$")


class StationDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loupe_station: int
    name: str = "station"
    description: str = ""
    jobs: dict[str, str | JobDoc] = Field(min_length=1)
    job: str | None = None
    source: str | SourceDoc | None = None
    trigger: Literal["free-run", "software", "source"] = "software"
    io: list[str | IoDoc] = Field(default_factory=list)
    store: list[str] = Field(default_factory=list)
    buffer: int = Field(16, ge=1, le=100_000)
    acknowledge: Literal["manual", "auto"] = "manual"
    hmi: HmiDoc | None = None
    state_file: str | None = None
    engine: Literal["cpu", "openvino", "cuda", "tensorrt", "auto"] | None = Field(
        None, description="inference engine for every job's models (beats the recipes' engine:)")


@dataclass
class IoSpec:
    """One line adapter of a station: its spec, class and validated options."""

    spec: str
    scheme: str
    target: str
    cls: type
    params: BaseModel
    process: str = "shared"   # "own": the adapter runs in a child process (host.core.line_process)


@dataclass
class StationConfig:
    """A validated station file (plus command-line overrides): what ``Station`` runs."""

    doc: StationDoc
    file: str
    base_dir: Path
    recipes: dict[str, Recipe]                 # job id -> recipe, in the file's order
    job_files: dict[str, Path]
    job_hashes: dict[str, str | None]
    source: str | SourceDoc | None
    source_base: Path
    io: list[IoSpec]
    stores: list[str]
    store_base: Path | None
    state_file: Path

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def jobs(self) -> list[str]:
        return list(self.recipes)

    @property
    def first_job(self) -> str:
        return self.doc.job or next(iter(self.recipes))


def is_station_file(path: str | Path) -> bool:
    """Whether ``path`` is a station file (it has a top-level ``loupe_station:`` key)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(MAX_FILE_BYTES)
    except OSError:
        return False
    for line in head.decode("utf-8", "replace").splitlines():
        if line.startswith("loupe_station:"):
            return True
    return False


def _read_yaml(path: Path, file: str) -> Any:
    if not path.is_file():
        raise RecipeError(file, ["file not found"])
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RecipeError(file, [f"the file is {size} bytes; a station file is at most {MAX_FILE_BYTES}"])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(file, [f"cannot read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(file, [f"YAML syntax error: {where}{problem}"]) from None
    except RecursionError:
        raise RecipeError(file, ["the YAML is nested too deeply"]) from None
    _check_shape(data, file)
    return data


def _check_shape(data: Any, file: str) -> None:
    """Refuse documents nested deeper than MAX_DEPTH or with more than MAX_NODES values
    (aliases are followed once: a shared node is not counted again)."""
    seen: set[int] = set()
    nodes = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        v, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise RecipeError(file, [f"the YAML is nested more than {MAX_DEPTH} levels deep"])
        if nodes > MAX_NODES:
            raise RecipeError(file, [f"the YAML holds more than {MAX_NODES} values"])
        if isinstance(v, (dict, list)):
            if id(v) in seen:
                continue
            seen.add(id(v))
            children = list(v.keys()) + list(v.values()) if isinstance(v, dict) else v
            stack.extend((c, depth + 1) for c in children)


_UNION_TAGS = {"str", "int", "JobDoc", "IoDoc", "HmiDoc", "SourceDoc"}


def _doc_errors(exc: ValidationError) -> list[str]:
    """pydantic errors as ``field.path: message`` lines, one per field."""
    out: dict[str, str] = {}
    for err in exc.errors():
        loc = [p for p in err["loc"] if p not in _UNION_TAGS]
        where = ""
        for part in loc:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        msg = {"missing": "missing field", "extra_forbidden": "unknown field"}.get(err["type"], err["msg"])
        out.setdefault(where or "station", msg)
    return [f"{k}: {v}" for k, v in out.items()]


def split_io_spec(spec: str) -> tuple[str, str]:
    """``tcp://127.0.0.1:2000`` -> (``tcp``, ``//127.0.0.1:2000``)."""
    scheme, sep, rest = spec.partition(":")
    if not sep or not scheme or not rest.startswith("//"):
        raise ValueError("expected SCHEME://HOST:PORT (e.g. tcp://127.0.0.1:2000)")
    return scheme.strip().lower(), rest


def _io_problems(where: str, entry: str | IoDoc | dict, catalogue) -> tuple[IoSpec | None, list[str]]:
    if isinstance(entry, dict):
        entry = IoDoc.model_validate(entry)
    spec = entry if isinstance(entry, str) else entry.spec
    options = {} if isinstance(entry, str) else dict(entry.model_extra or {})
    try:
        scheme, target = split_io_spec(spec)
    except ValueError as exc:
        return None, [f"{where}: {spec!r}: {exc}"]
    e = catalogue.line_adapters.get(scheme)
    if e is None:
        installed = ", ".join(f"{s}://" for s in sorted(catalogue.line_adapters))
        hint = "install loupe-line" if scheme in ("tcp", "opcua", "modbus", "mqtt") else \
            ("install loupe-hmi" if scheme == "http" else "")
        return None, [f"{where}: {spec!r}: no line adapter for {scheme!r} is installed"
                      + (f" ({hint})" if hint else "") + (f"; installed: {installed}" if installed else "")]
    process = options.pop("process", getattr(e.cls, "process", "shared"))
    if process not in ("own", "shared"):
        return None, [f"{where}.process: {process!r} is not one of own, shared"]
    if process == "own" and getattr(e.cls, "wants_frames", False):
        return None, [f"{where}.process: {scheme}:// takes frames from the station: it cannot run in a "
                      f"process of its own"]
    try:
        params = e.cls.Params.model_validate(options)
    except ValidationError as exc:
        return None, [f"{where}.{'.'.join(map(str, err['loc'])) or 'options'}: "
                      f"{'unknown option' if err['type'] == 'extra_forbidden' else err['msg']}"
                      for err in exc.errors()]
    return IoSpec(spec, scheme, target, e.cls, params, process), []


def _source_problems(where: str, src: str | SourceDoc, catalogue) -> list[str]:
    spec = src.spec if isinstance(src, SourceDoc) else src
    opts = dict(src.model_extra or {}) if isinstance(src, SourceDoc) else {}
    scheme, sep, target = spec.partition(":")
    entry = catalogue.sources.get(scheme.strip().lower()) if sep else None
    if entry is None:
        return [f"{where}: {spec!r} is not a source spec "
                f"({', '.join(f'{s}:...' for s in sorted(catalogue.sources)) or 'no source plugin installed'})"]
    try:
        entry.cls.Params.model_validate({"target": target, **opts})
    except ValidationError as exc:
        return [f"{where}.{'.'.join(map(str, e['loc']))}: "
                f"{'unknown option' if e['type'] == 'extra_forbidden' else e['msg']}" for e in exc.errors()]
    return []


def load_station(path: str | Path, catalogue, source: str | None = None, io: list[str] | None = None,
                 store: list[str] | None = None, hmi: str | None = None, check_io: bool = True) -> StationConfig:
    """Read and validate a station file (and command-line overrides) against the catalogue.

    Every problem is reported at once, each naming the file and the field
    (``station.yaml: jobs.coins: coins.yaml: inspect[0] (light): params.x: ...``).
    """
    p = Path(path)
    file = str(path)
    data = _read_yaml(p, file)
    base_dir = p.resolve().parent
    if not isinstance(data, dict):
        raise RecipeError(file, [f"a station file is a mapping of fields, got {type(data).__name__}"])
    if "loupe_station" not in data:
        raise RecipeError(file, ["loupe_station: missing field (the station schema version, 1)"])
    if data.get("loupe_station") != SCHEMA_VERSION:
        raise RecipeError(file, [f"loupe_station: schema version {data.get('loupe_station')!r} is not supported "
                                 f"(this Loupe reads version {SCHEMA_VERSION})"])
    try:
        doc = StationDoc.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(file, _doc_errors(exc)) from None
    problems: list[str] = []
    recipes: dict[str, Recipe] = {}
    job_files: dict[str, Path] = {}
    job_hashes: dict[str, str | None] = {}
    for job, ref in doc.jobs.items():
        where = f"jobs.{job}"
        if not re.match(JOB_ID, job):
            problems.append(f"{where}: a job id is 1-64 letters, digits, '_', '.' or '-', starting with a "
                            f"letter or digit (line protocols send it as is)")
            continue
        rpath = ref if isinstance(ref, str) else ref.recipe
        pin = None if isinstance(ref, str) else ref.hash
        rp = Path(rpath).expanduser()
        rp = rp if rp.is_absolute() else base_dir / rp
        job_files[job] = rp
        job_hashes[job] = pin
        try:
            recipe = Recipe.load(rp, catalogue)
        except RecipeError as exc:
            problems += [f"{where}: {rpath}: {pr}" for pr in exc.problems]
            continue
        if pin is not None and recipe.hash != pin:
            problems.append(f"{where}.hash: the station pins recipe hash {pin[:16]}…, {rpath} is "
                            f"{recipe.hash[:16]}… (the recipe changed)")
            continue
        recipes[job] = recipe
    if doc.job is not None and doc.job not in doc.jobs:
        problems.append(f"job: {doc.job!r} is not one of the jobs ({', '.join(doc.jobs)})")

    src: str | SourceDoc | None = source if source is not None else doc.source
    src_where = "--source" if source is not None else "source"
    if src is None:
        problems.append("source: missing field (a source spec such as folder:images; or give --source)")
    else:
        problems += _source_problems(src_where, src, catalogue)
    source_base = Path.cwd() if source is not None else base_dir

    io_entries: list[tuple[str, Any]] = ([(f"--io {s}", s) for s in io] if io is not None
                                         else [(f"io[{i}]", e) for i, e in enumerate(doc.io)])
    listen = hmi if hmi is not None else (doc.hmi.listen if doc.hmi else None)
    if listen is not None:
        where = "--hmi" if hmi is not None else "hmi.listen"
        if "http" not in catalogue.line_adapters:
            problems.append(f"{where}: the operator screen ({listen}) needs the 'http' line adapter: install loupe-hmi")
        else:
            options = dict(doc.hmi.model_extra or {}) if doc.hmi is not None else {}
            io_entries.append((where, {"spec": f"http://{listen}", **options} if options else f"http://{listen}"))
    io_specs: list[IoSpec] = []
    if check_io:
        for where, entry in io_entries:
            spec, probs = _io_problems(where, entry, catalogue)
            problems += probs
            if spec is not None:
                io_specs.append(spec)

    stores = list(store) if store is not None else list(doc.store)
    store_base: Path | None = None if store is not None else base_dir
    if not stores:
        stores = [f"sqlite:{p.stem}-results.sqlite"]
        store_base = base_dir
    for i, rep in enumerate(stores):
        where = f"--store {rep}" if store is not None else f"store[{i}]"
        scheme = rep.split(":", 1)[0]
        if ":" not in rep or scheme not in catalogue.reporters or not rep.split(":", 1)[1]:
            problems.append(f"{where}: {rep!r} is not a report spec "
                            f"({', '.join(f'{s}:PATH' for s in sorted(catalogue.reporters))})")
    if problems:
        raise RecipeError(file, problems)
    state_file = Path(doc.state_file).expanduser() if doc.state_file else Path(f"{p.stem}.state.json")
    state_file = state_file if state_file.is_absolute() else base_dir / state_file
    return StationConfig(doc, file, base_dir, recipes, job_files, job_hashes, src, source_base, io_specs, stores,
                         store_base, state_file)


# ----------------------------------------------------------------- result ids


class ResultIds:
    """Result ids that continue across restarts, ``kill -9`` included.

    The state file holds the first id not yet reserved. Ids are reserved in
    blocks (``block``): before the first id of a block is issued, the end of the
    block is written and fsynced. A crash can therefore leave a gap of at most
    one block, never a reused id; a clean ``close()`` records the exact next id.
    """

    def __init__(self, path: Path, block: int = 1000, lock: bool = True):
        self.path = Path(path)
        self.block = block
        self._next = 1
        self._lock_fd: int | None = None
        if lock:  # one station per state file: a second one would issue the same ids
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise UsageError(f"{self.path}: another station is running with this result-id state file "
                                 f"(the same station file, or the same state_file)") from None
            self._lock_fd = fd
        if self.path.exists():
            try:
                self._next = max(1, int(json.loads(self.path.read_text())["next_result_id"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"{self.path}: the station's result-id state file is unreadable ({exc}); "
                                 f"it guards result ids against reuse, so it is not overwritten: "
                                 f"repair or remove it") from None
        self.first = self._next
        self._reserved = self._next

    def _write(self, value: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"next_result_id": value}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        try:
            fd = os.open(str(self.path.parent), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:  # some file systems cannot fsync a directory
            pass

    def take(self) -> int:
        if self._next >= self._reserved:
            self._reserved = self._next + self.block
            self._write(self._reserved)
        rid = self._next
        self._next += 1
        return rid

    @property
    def next(self) -> int:
        return self._next

    def close(self) -> None:
        try:
            self._write(self._next)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None


# ------------------------------------------------------------ event channels


class _Channel:
    """One adapter's bounded event queue and the thread that feeds it (none for ``direct_events``:
    the adapter's ``on_event`` hands the event to a loop of its own and bounds it there)."""

    def __init__(self, name: str, adapter: LineAdapter):
        self.name = name
        self.adapter = adapter
        self.wants_frames = bool(getattr(adapter, "wants_frames", False))
        self.kinds = getattr(adapter, "event_kinds", None)
        self.direct = bool(getattr(adapter, "direct_events", False))
        self.queue: queue.Queue | None = (None if self.direct
                                          else queue.Queue(maxsize=max(1, int(adapter.queue_size))))
        self.dropped = 0
        self.errors = 0
        self.delivered = 0
        self._thread = None
        if not self.direct:
            self._thread = threading.Thread(target=self._run, name=f"loupe-events-{name}", daemon=True)
            self._thread.start()

    def put(self, event: StationEvent) -> None:
        if self.direct:
            self._deliver(event)
            return
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def _deliver(self, event: StationEvent) -> None:
        try:
            if self.adapter.on_event(event) is False:
                self.dropped += 1
            else:
                self.delivered += 1
        except Exception:
            self.errors += 1
            log.exception("line adapter %s failed on a %s event", self.name, event.kind)

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            self._deliver(event)

    def stop(self, timeout: float) -> None:
        if self._thread is None:
            return
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("line adapter %s: %d events left undelivered at shutdown", self.name, self.queue.qsize())
            return
        self._thread.join(timeout)


# ------------------------------------------------------------------ station


@dataclass
class _Job:
    recipe: Recipe
    pipeline: Any


@dataclass
class _Stores:
    run: RunInfo
    reporters: list[Reporter]
    counts: dict[str, int] = field(default_factory=lambda: {PASS: 0, REVIEW: 0, FAIL: 0, ERROR: 0})


@dataclass
class _Counters:
    counts: dict[str, int] = field(default_factory=lambda: {PASS: 0, REVIEW: 0, FAIL: 0, ERROR: 0})
    missed: int = 0
    overruns: int = 0
    issued: int = 0


class Station(StationControl):
    """The state machine, the result buffer, the inspection thread, the adapters' queues.

    ``Station(config, pm)`` builds nothing; ``start()`` builds every job's
    pipeline, opens the source and the stores, starts the inspection thread and
    then the adapters; ``close()`` finishes the frame in progress and the triggers already taken, stores them,
    closes every adapter and store, and records the next result id.
    """

    history_size = 256
    #: after this long without a trigger, the stores are flushed (SQLite: committed)
    idle_flush_s = 0.25

    def __init__(self, config: StationConfig, pm, source: Source | None = None):
        self.config = config
        self.pm = pm
        self._source = source
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._frame_lock = threading.Lock()       # held by the inspection thread per frame, and by changeovers
        self._state = INITIALIZED
        self._job = config.first_job
        self._jobs: dict[str, _Job] = {}
        self._stores: dict[str, _Stores] = {}      # job -> its open run in every store
        self._reporters: list[Reporter] = []       # the current job's (what the inspection thread writes)
        self._run: RunInfo | None = None
        self._after_frame = None
        self._ids: ResultIds | None = None
        self._pending: collections.deque[tuple[int, float, float]] = collections.deque()  # (id, wall, perf)
        self._aborting: set[int] = set()  # taken off the queue, their error results not yet stored
        self._taken: set[int] = set()     # triggered with acknowledge=True: released as they are published
        self._inflight: int | None = None
        self._source_stopped = False  # close() woke a source blocked in a wait: its frames have ended
        self._unacked: collections.OrderedDict[int, StationResult] = collections.OrderedDict()
        self._recent: collections.OrderedDict[int, StationResult] = collections.OrderedDict()
        self._last: StationResult | None = None
        self._c = _Counters()
        self._overrun = False
        self._alarms: dict[str, str] = {}
        self._adapters: list[tuple[str, LineAdapter]] = []
        self._channels: list[_Channel] = []
        self._connected: dict[str, tuple[bool, str]] = {}
        self._continuous = False
        self._stopping = False
        self._source_lost: str | None = None       # a camera the source is reopening (Error until it is back)
        self._resume_continuous = False
        self._frames = None
        self._ahead: Frame | BaseException | None = None  # a stored source's next frame, read while idle
        self._restart_source = False  # reset after an Error: the inspection thread starts the source again
        self._dirty = False
        self._last_done = 0.0
        self._last_miss_log = -1e9
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self.startup_ms: dict[str, float] = {}
        self.changeovers_ms: list[float] = []
        self.buffer_size = config.doc.buffer
        self.auto_ack = config.doc.acknowledge == "auto"
        self.trigger_mode = config.doc.trigger

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        from .runner import Pipeline, open_source

        cfg = self.config
        hook = self.pm.hook
        try:
            for job, recipe in cfg.recipes.items():
                if cfg.doc.engine:
                    recipe.engine = cfg.doc.engine
                t0 = time.perf_counter()
                pipe = Pipeline(recipe, on_step_error=lambda step, key, exc: hook.loupe_on_step_error(
                    run=self._run, step=step, key=key, error=exc))
                self._jobs[job] = _Job(recipe, pipe)
                self.startup_ms[f"build {job}"] = (time.perf_counter() - t0) * 1e3
            if self._source is None:
                self._source = open_source(cfg.source, self.pm.catalogue, base_dir=cfg.source_base)
            self._ids = ResultIds(cfg.state_file)
            for job in self._jobs:  # one run per job, opened now: a changeover opens nothing
                self._open_stores(job)
            self._activate(self._job)
            self._after_frame = hook.loupe_after_frame if hook.loupe_after_frame.get_hookimpls() else None
            for io in cfg.io:
                try:
                    adapter = ProcessAdapter(io.spec, io.cls, io.target, io.params, self) \
                        if io.process == "own" else io.cls(io.target, io.params, self)
                except ValueError as exc:  # a target the adapter cannot use (no port, ...)
                    raise UsageError(f"io {io.spec}: {exc}") from None
                self._adapters.append((io.spec, adapter))
            self._thread = threading.Thread(target=self._loop, name="loupe-inspection", daemon=True)
            self._thread.start()
            for name, adapter in self._adapters:
                if type(adapter).on_event is not LineAdapter.on_event:  # it listens: its own queue and thread
                    self._channels.append(_Channel(name, adapter))
                try:
                    adapter.start()
                except (OSError, ValueError) as exc:  # the port is taken, the host unknown, ...
                    raise UsageError(f"io {name}: cannot start: {exc}") from None
        except BaseException:
            self.close()
            raise
        with self._lock:
            if self.trigger_mode in ("free-run", "source"):
                self._continuous = True
                self._set_state(CONTINUOUS)
            else:
                self._set_state(READY)
            self._cv.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new triggers, finish the frame in progress and the triggers already taken (stored and
        answered), close adapters and stores. A source still blocked after 5 s is stopped: the frames left
        then get error results."""
        with self._lock:
            if self._stopping and self._thread is None:
                return
            self._stopping = True
            self._continuous = False
            self._cv.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            # the loop stops after the frame in progress; a source blocked in a wait is woken
            waited = 0.0
            while thread.is_alive() and waited < timeout:
                thread.join(0.2)
                waited += 0.2
                idle = self._inflight is None and not self._pending
                if thread.is_alive() and self._source is not None and (idle or waited >= 5):
                    self._source_stopped = True
                    self._source.stop()
        self._thread = None
        for ch in self._channels:
            ch.stop(timeout=2.0)
        for name, adapter in self._adapters:
            try:
                adapter.close()
            except Exception:
                log.exception("closing line adapter %s failed", name)
        errors: list[BaseException] = []
        # the current job's runs first: they may hold the write lock of a shared store (SQLite)
        for job in sorted(self._stores, key=lambda j: j != self._job):
            try:
                self._close_stores(job)
            except Exception as exc:
                errors.append(exc)
        for job in self._jobs.values():
            job.pipeline.close()
        if self._source is not None:
            try:
                self._source.close()
            except Exception:
                log.exception("closing the source failed")
        if self._ids is not None:
            self._ids.close()
        if errors:
            raise errors[0]

    @property
    def adapters(self) -> list[tuple[str, LineAdapter]]:
        """(spec, adapter) of every line adapter, in the station's order."""
        return list(self._adapters)

    # --------------------------------------------------------------- stores

    def _open_stores(self, job: str) -> None:
        """Open a run of ``job`` in every store (its recipe is what the run records)."""
        from .runner import open_reporter

        cfg = self.config
        recipe = self._jobs[job].recipe
        src = cfg.source.spec if isinstance(cfg.source, SourceDoc) else str(cfg.source)
        run = RunInfo(run_id=uuid.uuid4().hex[:12], recipe=recipe, recipe_hash=recipe.hash, source=src,
                      started=time.time(),
                      plugins={p.distribution: p.version for p in self.pm.load_report.plugins if not p.error})
        opened: list[Reporter] = []
        try:
            for spec in cfg.stores:
                r = open_reporter(spec, self.pm.catalogue, run, base_dir=cfg.store_base)
                r.open()
                opened.append(r)
        except BaseException:
            for r in opened:
                r.close()
            raise
        self._stores[job] = _Stores(run, opened)
        self.pm.hook.loupe_before_run(run=run)

    def _activate(self, job: str) -> None:
        """Make ``job``'s runs the ones the inspection thread writes (caller holds the frame lock)."""
        old = self._stores.get(self._job)
        if old is not None and self._job != job:
            self._flush(old.reporters)  # so the next job's run can write (SQLite: one writer)
        st = self._stores[job]
        self._run, self._reporters, self._run_counts = st.run, st.reporters, st.counts

    @staticmethod
    def _flush(reporters: list[Reporter]) -> None:
        for r in reporters:
            flush = getattr(r, "flush", None)
            if flush is not None:
                flush()

    def _close_stores(self, job: str) -> None:
        st = self._stores.pop(job, None)
        if st is None:
            return
        if st.reporters is self._reporters:
            self._reporters, self._run = [], None
        first: Exception | None = None
        for r in st.reporters:
            try:
                r.close()
            except Exception as exc:
                first = first or exc
        self.pm.hook.loupe_after_run(run=st.run, counts=dict(st.counts), interrupted=self._stopping)
        if first is not None:
            raise first

    # ---------------------------------------------------------------- events

    def _publish(self, kind: str, result: StationResult | None = None, message: str = "",
                 **data: Any) -> None:
        ev = StationEvent(kind, self._state, self._job, time.time(), result, message, data)
        light = None
        for ch in self._channels:
            if ch.kinds is not None and kind not in ch.kinds:
                continue
            if result is not None and result.frame is not None and not ch.wants_frames:
                if light is None:
                    light = dataclasses.replace(ev, result=dataclasses.replace(result, frame=None))
                ch.put(light)
            else:
                ch.put(ev)

    def _set_state(self, state: str, message: str = "") -> None:
        """Change state (caller holds the lock) and tell the adapters."""
        if state == self._state:
            return
        old = self._state
        self._state = state
        self._announce_state(old, message)

    def _announce_state(self, old: str, message: str = "") -> None:
        """Tell the adapters that the state changed from ``old`` (caller holds the lock)."""
        log.info("station state %s -> %s%s", old, self._state, f" ({message})" if message else "")
        self._publish(STATE_CHANGED, message=message, previous=old)

    def _fail(self, message: str) -> None:
        """Enter Error (caller holds the lock)."""
        self._alarms["error"] = message
        self._continuous = False
        log.error("station error: %s", message)
        self._set_state(ERROR_STATE, message)
        self._publish(STATION_ERROR, message=message)

    # ------------------------------------------------------------ status reads

    @property
    def state(self) -> str:
        return self._state

    @property
    def job(self) -> str:
        return self._job

    @property
    def jobs(self) -> list[str]:
        return list(self.config.recipes)

    @property
    def base_dir(self) -> Path:
        return self.config.base_dir

    def _used(self) -> int:
        return len(self._pending) + (self._inflight is not None) + len(self._unacked)

    def status(self) -> dict[str, Any]:
        with self._lock:
            adapters = {}
            channels = {ch.name: ch for ch in self._channels}
            for name, _ in self._adapters:
                conn, detail = self._connected.get(name, (None, ""))
                ch = channels.get(name)  # none for an adapter that does not listen to events
                adapters[name] = {"connected": conn, "detail": detail,
                                  "events_queued": ch.queue.qsize() if ch and ch.queue else 0,
                                  "events_dropped": ch.dropped if ch else 0, "event_errors": ch.errors if ch else 0}
            return {
                "station": self.config.name, "state": self._state, "job": self._job, "jobs": self.jobs,
                "trigger": self.trigger_mode, "counts": dict(self._c.counts),
                "results_issued": self._c.issued,
                "last_result_id": self._last.result_id if self._last else None,
                "next_result_id": self._ids.next if self._ids else None,
                "buffer": {"size": self.buffer_size, "used": self._used(), "pending": len(self._pending)
                           + (self._inflight is not None), "unacknowledged": len(self._unacked)},
                "acknowledge": "auto" if self.auto_ack else "manual",
                "missed": self._c.missed, "overruns": self._c.overruns, "overrun": self._overrun,
                "adapters": adapters, "alarms": dict(self._alarms),
                "uptime_s": round(time.time() - self._started, 3),
                "changeover_ms": round(self.changeovers_ms[-1], 3) if self.changeovers_ms else None,
            }

    def last_result(self) -> StationResult | None:
        return self._last

    def result(self, result_id: int) -> StationResult | None:
        with self._lock:
            return self._unacked.get(result_id) or self._recent.get(result_id)

    # ---------------------------------------------------------------- actions

    def _miss(self, code: str, message: str) -> StationActionError:
        """Count a trigger that could not be taken, report it, and return the error to raise."""
        self._c.missed += 1
        if code == "buffer_full":
            self._c.overruns += 1
            self._overrun = True
        now = time.monotonic()
        if now - self._last_miss_log >= 1.0:  # reported at most once a second in the log (events: each)
            self._last_miss_log = now
            log.warning("missed trigger (%s): %s; %d missed so far", code, message, self._c.missed)
        self._publish(TRIGGER_MISSED, message=message, reason=code, missed=self._c.missed)
        return StationActionError(code, message)

    def trigger(self, acknowledge: bool = False) -> int:
        with self._lock:
            st = self._state
            if self._stopping:
                raise self._miss("not_ready", "the station is shutting down")
            if st in (INITIALIZED, ERROR_STATE):
                raise self._miss("not_ready", f"the station is {st}")
            if st == CONTINUOUS:
                raise self._miss("busy", "the station is in ContinuousExecution")
            if self._used() >= self.buffer_size:
                raise self._miss("buffer_full", f"the result buffer is full ({self.buffer_size} results "
                                                f"waiting or in progress)")
            rid = self._ids.take()
            self._c.issued += 1
            if acknowledge:
                self._taken.add(rid)
            self._pending.append((rid, time.time(), time.perf_counter()))
            if st == READY:
                self._set_state(SINGLE)
            self._cv.notify_all()
            return rid

    def wait_result(self, result_id: int, timeout: float | None = None) -> StationResult | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                r = self._unacked.get(result_id) or self._recent.get(result_id)
                if r is not None:
                    return r
                if self._ids is not None and result_id >= self._ids.next:
                    return None  # never issued
                if result_id != self._inflight and result_id not in self._aborting \
                        and all(p[0] != result_id for p in self._pending):
                    return None  # not in progress and no longer held (or aborted before issue)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cv.wait(left)

    def start_continuous(self) -> None:
        with self._lock:
            if self._state == CONTINUOUS:
                return
            if self._state != READY or self._stopping:
                raise StationActionError("busy" if self._state == SINGLE else "not_ready",
                                         f"continuous mode starts from Ready; the station is {self._state}")
            self._continuous = True
            self._set_state(CONTINUOUS)
            self._cv.notify_all()

    def stop_continuous(self) -> None:
        with self._lock:
            if self._state != CONTINUOUS:
                return
            self._continuous = False
            if self._inflight is None:
                self._set_state(READY)
            self._cv.notify_all()

    def select_job(self, job: str) -> None:
        if job not in self.config.recipes:
            raise StationActionError("unknown_job", f"no job {job!r}; jobs: {', '.join(self.jobs)}")
        with self._lock:
            if job == self._job:
                return
            if self._state != READY or self._pending or self._inflight is not None:
                raise StationActionError("busy" if self._state in (SINGLE, CONTINUOUS) else "not_ready",
                                         f"a job changes in Ready; the station is {self._state}")
            with self._frame_lock:
                t0 = time.perf_counter()
                self._activate(job)
                self._job = job
                ms = (time.perf_counter() - t0) * 1e3
            self.changeovers_ms.append(ms)
            del self.changeovers_ms[:-100]
            log.info("job changed to %s in %.2f ms", job, ms)
            self._publish(JOB_CHANGED, changeover_ms=ms)

    def acknowledge(self, result_id: int | None = None) -> None:
        with self._lock:
            if result_id is None:
                if not self._unacked:
                    raise StationActionError("no_result", "no result waits for an acknowledgement")
                result_id = next(iter(self._unacked))
            r = self._unacked.pop(result_id, None)
            if r is None:
                known = self._recent.get(result_id)
                if known is not None and known.acknowledged:
                    return  # acknowledging twice is harmless
                raise StationActionError("no_result", f"result {result_id} is not waiting in the buffer")
            r.acknowledged = True
            if r is not self._last and r.frame is not None and result_id in self._recent:
                self._recent[result_id] = dataclasses.replace(r, frame=None)
            self._publish(RESULT_ACKNOWLEDGED, result=r)
            self._cv.notify_all()

    def reset(self) -> None:
        with self._lock:
            st = self._state
            if st == INITIALIZED or self._stopping:
                raise StationActionError("not_ready", f"the station is {st}")
            self._alarms.pop("error", None)
            self._overrun = False
            self._continuous = False
            aborted = list(self._pending)
            self._pending.clear()
            self._aborting.update(rid for rid, _, _ in aborted)
            if self._inflight is None:
                self._restart_source = self._restart_source or st == ERROR_STATE
                self._set_state(READY, "reset")
            self._cv.notify_all()
        for rid, wall, perf in aborted:
            self._abort(rid, wall, "aborted by reset")
        with self._lock:
            if self._state == ERROR_STATE and self._inflight is None:
                self._set_state(READY, "reset")

    def reload(self) -> None:
        from .runner import Pipeline

        cfg = self.config
        new: dict[str, _Job] = {}
        try:
            for job, path in cfg.job_files.items():
                try:
                    recipe = Recipe.load(path, self.pm.catalogue)
                except RecipeError as exc:
                    raise StationActionError("bad_recipe", f"job {job}: {exc}") from None
                pin = cfg.job_hashes.get(job)
                if pin is not None and recipe.hash != pin:
                    raise StationActionError("bad_recipe", f"job {job}: {path}: the recipe's hash "
                                                           f"{recipe.hash[:16]}… is not the pinned {pin[:16]}…")
                old = self._jobs[job]
                if recipe.hash == old.recipe.hash:
                    continue
                hook = self.pm.hook
                recipe.engine = cfg.doc.engine
                try:
                    pipe = Pipeline(recipe, on_step_error=lambda step, key, exc: hook.loupe_on_step_error(
                        run=self._run, step=step, key=key, error=exc))
                except Exception as exc:
                    raise StationActionError("bad_recipe", f"job {job}: {path}: cannot build: "
                                                           f"{type(exc).__name__}: {exc}") from None
                new[job] = _Job(recipe, pipe)
        except BaseException:
            for j in new.values():
                j.pipeline.close()
            raise
        if not new:
            return
        with self._frame_lock:
            old_jobs = {job: self._jobs[job] for job in new}
            self._jobs.update(new)
            cfg.recipes.update({job: j.recipe for job, j in new.items()})
            self._flush(self._reporters)  # releases a shared store's write lock (SQLite)
            for job in new:  # the stores record the recipe of each run: a new run per changed job
                self._close_stores(job)
                self._open_stores(job)
            self._activate(self._job)
        for j in old_jobs.values():
            j.pipeline.close()
        log.info("reloaded jobs: %s", ", ".join(new))
        with self._lock:
            self._publish(JOB_CHANGED, reloaded=sorted(new))

    def reset_counters(self) -> None:
        with self._lock:
            self._c.counts = {PASS: 0, REVIEW: 0, FAIL: 0, ERROR: 0}
            self._c.missed = 0
            self._c.overruns = 0
            self._overrun = False

    def describe_job(self, job: str) -> dict[str, Any]:
        rec = self._jobs.get(job)
        recipe = rec.recipe if rec is not None else self.config.recipes.get(job)
        if recipe is None:
            raise StationActionError("unknown_job", f"no job {job!r}; jobs: {', '.join(self.jobs)}")
        return {"job": job, "recipe": recipe.name, "hash": recipe.hash,
                "steps": [{"name": st.name, "tool": st.tool_id, "required": st.required,
                           "limits": {k: lim.model_dump(exclude_none=True) for k, lim in st.limits.items()}}
                          for st in recipe.inspect]}

    def set_adapter_connected(self, adapter: str, connected: bool, detail: str = "") -> None:
        with self._lock:
            self._connected[adapter] = (bool(connected), detail)
            key = f"adapter {adapter}"
            if connected:
                self._alarms.pop(key, None)
            else:
                self._alarms[key] = detail or "disconnected"

    # ------------------------------------------------------ inspection thread

    def _next_frame(self) -> Frame:
        for _ in range(2):
            if self._frames is None:
                self._frames = iter(self._source.frames())
            try:
                return next(self._frames)
            except StopIteration:
                self._frames = None  # a folder: cycle through it again
                if self._source_stopped:
                    break
        raise RuntimeError("the source yields no frames")

    def _restart_if_reset(self) -> None:
        """A reset out of Error starts the source again (on the inspection thread, which owns it)."""
        if self._restart_source:
            self._restart_source = False
            self._frames, self._ahead = None, None

    def _read_ahead(self) -> None:
        """A stored source (files, a recorded video): read its next frame now, while no trigger waits, so
        that the next trigger finds it decoded. A read that fails is kept and raised for that trigger."""
        self._restart_if_reset()
        if self._ahead is None and not self._stopping and self._source is not None and self._source.stored:
            try:
                self._ahead = self._next_frame()
            except Exception as exc:
                self._ahead = exc

    def _take_frame(self) -> Frame:
        """The frame for this trigger: the one read ahead, else the source's next."""
        self._restart_if_reset()
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return self._next_frame()
        if isinstance(ahead, BaseException):
            raise ahead
        return ahead

    def _loop(self) -> None:
        try:
            while True:
                self._read_ahead()
                flush = False
                with self._lock:
                    while not (self._stopping or self._pending or self._source_lost
                               or (self._continuous and self._state == CONTINUOUS
                                   and (self.trigger_mode == "source" or self._used() < self.buffer_size))):
                        if self._dirty and time.monotonic() - self._last_done >= self.idle_flush_s:
                            flush = True
                            break
                        self._cv.wait(0.05 if self._dirty else 0.5)
                    if self._stopping and not self._pending:
                        break  # stopping: triggers already taken (answered TriggerAck) are inspected first
                    lost = self._source_lost
                    if flush or (lost and not self._pending):
                        rid = None
                    elif self._pending:
                        rid, wall, perf = self._pending.popleft()
                        self._inflight = rid
                    else:
                        rid = None
                if flush:
                    self._flush_idle()
                elif lost and rid is None:
                    self._await_source()
                elif rid is None:
                    self._continuous_frame()
                else:
                    self._inspect(rid, wall, perf)
        except BaseException as exc:  # the loop must not die silently
            log.exception("the inspection thread failed")
            with self._lock:
                self._fail(f"inspection thread: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                aborted = list(self._pending)
                self._pending.clear()
                self._aborting.update(rid for rid, _, _ in aborted)
            for rid, wall, perf in aborted:
                self._abort(rid, wall, "station stopped" if self._stopping else "inspection thread failed")

    def _flush_idle(self) -> None:
        """The station has been idle for ``idle_flush_s``: make the stored results durable
        (busy, the stores batch their commits; a flush here never delays a frame in progress)."""
        error = None
        with self._frame_lock:
            self._dirty = False
            try:
                self._flush(self._reporters)
            except Exception as exc:
                error = f"store: {type(exc).__name__}: {exc}"
        if error is not None:  # the state lock is never taken while the frame lock is held
            with self._lock:
                self._fail(error)

    def _await_source(self) -> None:
        """The source lost its camera: wait (here, on the inspection thread) for the source's next frame,
        which comes once it has reopened the camera; then leave Error by itself."""
        try:
            frame = self._next_frame()
        except Exception as exc:
            frame = Frame(image=None, source=str(self.config.source), index=-1, error=str(exc),
                          meta={"device_lost": True})
        with self._lock:
            if self._stopping or frame.meta.get("device_lost"):
                return  # still gone (or stopping): the loop asks again
            self._source_lost = None
            self._alarms.pop("source", None)
            self._alarms.pop("error", None)
            if self._state == ERROR_STATE and self._inflight is None:
                if self._resume_continuous:
                    self._continuous = True
                    self._set_state(CONTINUOUS, "camera back")
                else:
                    self._set_state(READY, "camera back")
            self._cv.notify_all()

    def _source_failed(self, frame: Frame) -> None:
        """A frame that says the camera is gone (``meta["device_lost"]``): Error until the source has it back.
        Caller holds the lock."""
        self._resume_continuous = self._continuous or self._state == CONTINUOUS
        self._source_lost = frame.error or "camera lost"
        self._fail(f"source: {self._source_lost}")
        self._alarms["source"] = self._source_lost

    def _continuous_frame(self) -> None:
        t_wall, t_perf = time.time(), time.perf_counter()
        try:
            frame = self._take_frame()
        except Exception as exc:
            with self._lock:
                if not self._stopping:
                    self._fail(f"source: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            if self._stopping or not self._continuous:
                return  # stopped while waiting for the frame: not a trigger the station took
            if self.trigger_mode != "source":
                t_wall, t_perf = time.time(), time.perf_counter()
            if self._used() >= self.buffer_size:
                self._miss("buffer_full", f"a {self.trigger_mode} frame arrived with the result buffer full")
                return
            rid = self._ids.take()
            self._c.issued += 1
            self._inflight = rid
        self._inspect(rid, t_wall, t_perf, frame)

    def _inspect(self, rid: int, wall: float, perf: float, frame: Frame | None = None) -> None:
        error = None
        if frame is None:
            try:
                frame = self._take_frame()
            except Exception as exc:
                error = f"source: {type(exc).__name__}: {exc}"
                frame = Frame(image=None, source=str(self.config.source), index=rid, error=error)
        with self._frame_lock:
            job = self._job
            fr: FrameResult = self._jobs[job].pipeline.process(frame)
        fr.key = str(rid)
        fr.index = rid
        # the result goes to the line first, then to the stores: the PLC does not wait for SQLite. _finish
        # hands the state lock over to the frame lock, so no changeover comes between the two
        self._finish(rid, job, wall, fr, perf, store=True, lost=frame if frame.meta.get("device_lost") else None)
        try:
            store_error = self._store(fr)
        finally:
            self._frame_lock.release()
        self._dirty = True
        self._last_done = time.monotonic()
        if error is not None or store_error is not None:
            with self._lock:
                self._fail(error or store_error)

    def _store(self, fr: FrameResult) -> str | None:
        """Write a frame's result to the current job's stores (caller holds the frame lock); the first
        store's error, if any."""
        store_error = None
        for r in self._reporters:
            try:
                r.write(fr)
            except Exception as exc:
                store_error = store_error or f"store {type(r).scheme}: {type(exc).__name__}: {exc}"
        self._run_counts[fr.verdict] += 1
        if self._after_frame is not None:
            self._after_frame(run=self._run, result=fr)
        return store_error

    def _finish(self, rid: int, job: str, wall: float, fr: FrameResult, perf: float, store: bool = False,
                lost: Frame | None = None) -> None:
        """Publish a result. With ``store``, return holding the frame lock (taken before the state lock is
        released: the order select_job takes them in), for the caller to store the result and release it.
        ``lost``: the frame said the camera is gone; the station is in Error when the result is seen."""
        measurements: dict[str, Any] = {}
        failures: list[str] = []
        for tr in fr.results:
            for k, v in tr.measurements.items():
                measurements[f"{tr.step}.{k}"] = v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v
            failures += [f"{tr.step}: {f}" for f in tr.failures]
            if tr.error:
                failures.append(f"{tr.step}: {tr.error}")
        if fr.error:
            failures.append(fr.error)
        res = StationResult(rid, job, fr.verdict, measurements, failures, wall, dict(fr.timings), fr)
        with self._lock:
            self._c.counts[fr.verdict] += 1
            if self.auto_ack or rid in self._taken:
                self._taken.discard(rid)
                res.acknowledged = True
            else:
                self._unacked[rid] = res
            prev = self._last
            if prev is not None and prev.frame is not None and prev.result_id not in self._unacked \
                    and prev.result_id in self._recent:
                # only the newest result (and those in the buffer) keep their image
                self._recent[prev.result_id] = dataclasses.replace(prev, frame=None)
            self._last = res
            self._recent[rid] = res
            self._aborting.discard(rid)
            while len(self._recent) > self.history_size:
                self._recent.popitem(last=False)
            self._inflight = None
            # back to Ready before the result is heard of: an adapter may answer its PLC from inside the
            # publish (the TCP reply), and a state read after that answer must not still say Executing.
            # The state change is announced after the result, as before.
            old = self._state
            if lost is None and ((old == SINGLE and not self._pending) or (old == CONTINUOUS and not self._continuous)):
                self._state = READY
            self._publish(RESULT_READY, result=res, latency_ms=(time.perf_counter() - perf) * 1e3)
            if lost is not None:
                self._source_failed(lost)
            elif self._state != old:
                self._announce_state(old)
            self._cv.notify_all()
            if store:
                self._frame_lock.acquire()
        if store:
            time.sleep(0)  # let the woken adapter threads take the GIL: their replies before our stores

    def _abort(self, rid: int, wall: float, reason: str) -> None:
        """A trigger that was taken but will not be inspected: stored and published as an error result."""
        rec = self._jobs.get(self._job)
        fr = FrameResult(str(rid), rid, str(self.config.source), None, wall, ERROR, [], {},
                         rec.recipe.hash if rec else "", reason, None)
        with self._frame_lock:
            for r in self._reporters:
                try:
                    r.write(fr)
                except Exception:
                    log.exception("storing aborted result %d failed", rid)
            if self._reporters:
                self._run_counts[ERROR] += 1
        self._finish(rid, self._job, wall, fr, time.perf_counter())


def describe_station(config: StationConfig) -> str:
    """The ``loupe validate`` summary of a valid station file."""
    jobs = ", ".join(f"{j} ({r.name}, hash {r.hash[:12]})" for j, r in config.recipes.items())
    io = ", ".join(s.spec + (" (own process)" if s.process == "own" else "") for s in config.io) or "none"
    src = config.source.spec if isinstance(config.source, SourceDoc) else config.source
    return (f"OK {config.file}: station {config.name!r}, {len(config.recipes)} jobs: {jobs}; source {src}; "
            f"trigger {config.doc.trigger}; io: {io}; store: {', '.join(config.stores)}; "
            f"buffer {config.doc.buffer} ({config.doc.acknowledge} acknowledge)")
