"""The one place that builds inference sessions, for every engine.

Every plugin that runs an ONNX graph (the inference runtimes, the trainer's
export checks and optimisers) calls ``create_session``, so session settings and
engines are chosen here once. ``onnxruntime`` (and ``openvino``) are imported
only when a session is first built: the host itself depends on neither.

Engines (``SessionOptions.engine``, ``--engine``, a recipe's or station's ``engine:``,
or ``LOUPE_ENGINE``; see ``resolve_engine`` for the order):

- ``cpu``: ONNX Runtime's CPU provider (the default);
- ``openvino``: OpenVINO's own runtime reading the same ONNX graph, compiled for the
  CPU in f32 (``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 units OpenVINO's
  default silently runs in bf16 and moves anomaly scores by more than the threshold);
- ``cuda`` and ``tensorrt``: ONNX Runtime's CUDA and TensorRT providers
  (``onnxruntime-gpu``); TensorRT engines are cached in a folder next to the model;
- ``auto``: the fastest engine that is usable here *and* matches the CPU's outputs,
  chosen by a short timed probe when the session is built; the choice is logged and
  kept on the session (``session.engine``).

An engine other than ``cpu`` is checked when a session is built: a bundle's stored
parity set (``engine_parity`` in ``bundle.json``: a few preprocessed training images
and ONNX Runtime CPU's outputs on them, written by every trainer through
``write_bundle``) is run and compared with the stored outputs (``check_stored_parity``,
within the bundle's ``rtol`` of each output's scale); a bundle without one (written
before them, or a bare ``.onnx``) is checked on seeded probe inputs against ONNX
Runtime's CPU provider (``check_parity``). A mismatch refuses the engine.
An engine that is missing or unusable raises ``UsageError`` naming what to install
(exit 2), except under ``auto``, which then falls back to ``cpu``.

Precision per engine (a bundle's ``optimization.method``: ``fp16``, ``int8``, else fp32;
``PRECISION_NOTES`` says it for each engine and ``session.precision`` records it):

- ``cpu``: fp32 and int8 (QOperator or QDQ) natively; an fp16 graph runs, but ONNX Runtime's
  CPU provider has few float16 kernels and casts around the rest, so it is slower than its
  float32 parent (logged);
- ``openvino``: fp32 and int8 QDQ graphs (not ``com.microsoft.QLinear*``: ``loupe optimize
  --method int8 --engine openvino`` writes QDQ); compiled with ``INFERENCE_PRECISION_HINT=f32``
  on the CPU, so an fp16 graph's weights are widened to f32 at compile time (same speed as
  fp32, no cast nodes at run time) and bf16 is never chosen silently;
- ``cuda``: fp16 natively (tensor cores), fp32 as is;
- ``tensorrt``: fp16 bundles are built with ``trt_fp16_enable`` (TensorRT may then run the
  float32 parts in fp16 too; the parity check decides); fp32 bundles stay fp32; int8 QDQ
  graphs are read as explicit quantisation.

Graphs whose weights live in ONNX external-data files are refused (a bundle's
manifest pins the ``.onnx`` file only, and a runtime follows any location a graph
names, even outside the bundle).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError, UsageError

log = logging.getLogger("loupe.sessions")

#: engine name -> ONNX Runtime execution providers, in order of preference (openvino is its own runtime)
ENGINES: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "openvino": (),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
ENGINE_CHOICES = tuple(ENGINES) + ("auto",)
INSTALL = {
    "openvino": "pip install 'loupe-host[openvino]' (openvino 2026.4)",
    "cuda": "pip install 'loupe-host[gpu]' (onnxruntime-gpu in place of onnxruntime) on a machine with an "
            "NVIDIA GPU and its CUDA 12 driver",
    "tensorrt": "pip install 'loupe-host[gpu]' plus NVIDIA's TensorRT 10 libraries, on a machine with an NVIDIA GPU",
}
PRECISION_NOTES = {
    ("cpu", "fp16"): "ONNX Runtime's CPU provider has few float16 kernels and casts around the rest: this fp16 "
                     "bundle runs slower than its float32 parent (use it on cuda/tensorrt, or openvino)",
    ("openvino", "fp16"): "fp16 weights widened to f32 when compiled for the CPU (INFERENCE_PRECISION_HINT=f32)",
    ("cuda", "fp16"): "fp16 natively",
    ("tensorrt", "fp16"): "TensorRT built with trt_fp16_enable",
    ("openvino", "int8"): "int8 QDQ graph as OpenVINO low-precision kernels",
    ("tensorrt", "int8"): "int8 QDQ graph as TensorRT explicit quantisation",
}
#: outputs of another engine may differ from the CPU's by this fraction of their largest magnitude
PARITY_RTOL = 1e-3
_override: str | None = None
_eval_batch: int | None = None

#: "all" (every graph optimisation, the default), "basic" or "none"
_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
           "none": "ORT_DISABLE_ALL"}


@dataclass(frozen=True)
class SessionOptions:
    """How a session is built. ``threads``: intra-op threads (one inter-op thread, sequential
    execution: Loupe runs one image at a time per step). ``optimization``: the graph
    optimisation level (``all``, ``extended``, ``basic``, ``none``). ``engine``: see the
    module docstring."""

    threads: int = 2
    engine: str = "cpu"
    optimization: str = "all"


def engine_status() -> dict[str, str | None]:
    """Engine -> ``None`` when usable here, else why not (``loupe plugins`` shows it)."""
    out: dict[str, str | None] = {}
    try:
        import onnxruntime as ort

        have = set(ort.get_available_providers())
    except ImportError:
        have = set()
    for name, providers in ENGINES.items():
        if name == "openvino":
            try:
                import openvino  # noqa: F401
                out[name] = None
            except ImportError:
                out[name] = f"not installed: {INSTALL[name]}"
        elif set(providers) <= have:
            out[name] = None
        else:
            out[name] = f"this onnxruntime has no {providers[0]}: {INSTALL.get(name, 'pip install onnxruntime')}"
    return out


def available_engines() -> list[str]:
    """The engines usable on this machine."""
    return [name for name, why in engine_status().items() if why is None]


def set_engine_override(engine: str | None) -> None:
    """The command line's ``--engine``: wins over recipes, stations and ``LOUPE_ENGINE``."""
    global _override
    if engine is not None:
        check_engine_name(engine, "--engine")
    _override = engine


def set_eval_batch(batch: int | None) -> None:
    """``loupe eval --batch N``: images per graph run in evaluation (never on the per-frame line path)."""
    global _eval_batch
    if batch is not None and not 1 <= int(batch) <= 256:
        raise UsageError(f"--batch: give 1..256 images per run, got {batch}")
    _eval_batch = None if batch is None else int(batch)


def eval_batch(default: int = 1) -> int:
    """The batch size an evaluation runs at: ``--batch``, else the runtime's measured ``default``
    (a graph with a fixed batch dimension, or one where batching does not pay on the CPU, passes 1)."""
    return _eval_batch if _eval_batch is not None else default


def check_engine_name(engine: str, where: str = "engine") -> str:
    if engine not in ENGINE_CHOICES:
        raise UsageError(f"{where}: unknown engine {engine!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    return engine


def resolve_engine(requested: str | None = None) -> str:
    """The engine an inference runtime uses: ``--engine``, else the recipe's or station's
    ``engine:`` (``requested``), else ``LOUPE_ENGINE``, else ``cpu``."""
    if _override is not None:
        return _override
    if requested:
        return check_engine_name(requested)
    env = os.environ.get("LOUPE_ENGINE", "").strip()
    return check_engine_name(env, "LOUPE_ENGINE") if env else "cpu"


def bundle_precision(model: str | Path | bytes) -> str:
    """``fp16``, ``int8`` or ``fp32``: what ``loupe optimize`` made of the bundle holding the graph file."""
    import json

    if isinstance(model, bytes):
        return "fp32"
    meta_file = Path(model).parent / "bundle.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return "fp32"
    method = (meta.get("optimization") or {}).get("method") if isinstance(meta, dict) else None
    return method if method in ("fp16", "int8") else "fp32"


def _providers(engine: str, cache_dir: Path | None, precision: str = "fp32") -> list:
    check_engine_name(engine)
    why = engine_status().get(engine)
    if why is not None:
        raise UsageError(f"engine {engine} cannot run here: {why}")
    providers: list = list(ENGINES[engine])
    if engine == "tensorrt":
        opts = {"trt_engine_cache_enable": True, "trt_timing_cache_enable": True}
        if precision == "fp16":
            opts["trt_fp16_enable"] = True
        if cache_dir is not None:
            opts["trt_engine_cache_path"] = str(cache_dir)
            opts["trt_timing_cache_path"] = str(cache_dir)
        providers[0] = (providers[0], opts)
    return providers


def create_session(model: str | Path | bytes, threads: int | None = None, *, engine: str | None = None,
                   optimization: str | None = None, options: SessionOptions | None = None,
                   parity: bool = True, outputs: tuple[str, ...] = (), spin: bool = False) -> Any:
    """An inference session for ``model`` (a file path or the serialised ONNX graph).

    Returns an ``onnxruntime.InferenceSession`` (or, for ``openvino``, an object with the
    same ``run``/``get_inputs``/``get_outputs``), with ``.engine`` set to the engine used.
    ``threads``, ``engine`` and ``optimization`` override ``options`` (default
    ``SessionOptions()``: ``cpu``); inference runtimes pass ``engine=resolve_engine(...)``,
    the trainer's own checks stay on the CPU. Raises ``UsageError`` for an unknown or
    unusable engine (with what to install) or a failed parity check, ``BundleError``
    naming the file when the graph cannot be opened or lacks one of the ``outputs`` a runtime reads.
    Idle threads sleep (``session.intra_op.allow_spinning`` 0) unless ``spin=True``. ONNX Runtime's default,
    spinning, keeps a session's pool threads busy after each run, competing for the cores with whatever the
    frame does next: the tool's own numpy/OpenCV work, or a second model's session. Through ``loupe bench`` at
    2 threads (notes/issue-18.md, session 9) sleeping threads took the default anomaly step from 14-24 to 11-13 ms,
    an anomaly + classification recipe from 26-34 to 14-16 ms and anomaly + detection from 58 to 30 ms; only a
    tiny graph run back to back gains from spinning (a 64 px classifier, ~0.3 ms).
    """
    opts = options or SessionOptions()
    threads = opts.threads if threads is None else threads
    engine = check_engine_name(opts.engine if engine is None else engine)
    level = opts.optimization if optimization is None else optimization
    if level not in _LEVELS:
        raise UsageError(f"unknown graph optimisation level {level!r} ({', '.join(_LEVELS)})")
    data, what, cache = _read(model)
    stored = stored_parity(model) if parity and engine != "cpu" and not isinstance(model, bytes) else None
    precision = bundle_precision(model)
    if engine == "auto":
        sess = _auto(data, what, threads, level, cache, stored, precision, spin)
    else:
        sess = _build(data, what, threads, level, engine, cache, parity, stored, precision, spin)
    sess.precision = precision
    have = [o.name for o in sess.get_outputs()]
    for name in outputs:
        if name not in have:
            raise BundleError(f"{what}: the ONNX model has no output {name!r} (outputs: {have})")
    note = PRECISION_NOTES.get((sess.engine, precision))
    if note:
        (log.warning if sess.engine == "cpu" else log.info)("%s on %s: %s", what, sess.engine, note)
    return sess


def _read(model: str | Path | bytes) -> tuple[bytes, str, Path | None]:
    if isinstance(model, bytes):
        return model, "the serialised ONNX graph", None
    try:
        data = Path(model).read_bytes()
    except OSError as exc:
        raise BundleError(f"{model}: cannot read the ONNX graph: {exc.strerror or exc}") from None
    folder = Path(model).resolve().parent  # TensorRT engines are cached next to the bundle, not inside it
    return data, str(model), folder.with_name(folder.name + ".trt-cache")


@dataclass(frozen=True)
class StoredParity:
    """A bundle's stored parity set, loaded: the input name, the images (N first), the CPU's outputs, rtol."""

    input: str
    images: np.ndarray
    outputs: dict[str, np.ndarray]
    rtol: float
    where: str


def stored_parity(model: str | Path) -> StoredParity | None:
    """The stored parity set of the bundle holding the graph file ``model``, or ``None`` when the graph is
    not in a bundle or the bundle has none (written before them). Files are checked against the manifest."""
    from .bundle import Bundle, is_bundle, sha256_file

    folder = Path(model).parent
    if not is_bundle(folder):
        return None
    bundle = Bundle.load(folder, verify=False)  # the runtime verified it; the parity files are hashed below
    ep = bundle.info.engine_parity if bundle.info is not None else None
    if ep is None:
        return None
    arrays = {}
    for name in (ep.inputs, *ep.outputs.values()):
        f = bundle.file(name)
        if sha256_file(f) != bundle.files[name]:
            raise BundleError(f"{folder}: {name} fails its hash check: the bundle was modified or corrupted")
        try:
            arrays[name] = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"{f}: unreadable parity array: {exc}") from None
    return StoredParity(ep.input, arrays[ep.inputs], {o: arrays[n] for o, n in ep.outputs.items()}, ep.rtol,
                        f"{folder}/bundle.json engine_parity ({ep.images} stored images)")


def _build(data: bytes, what: str, threads: int, level: str, engine: str, cache: Path | None,
           parity: bool, stored: StoredParity | None = None, precision: str = "fp32", spin: bool = False) -> Any:
    if engine == "openvino":
        if engine_status()["openvino"] is not None:
            raise UsageError(f"engine openvino cannot run here: {engine_status()['openvino']}")
        sess: Any = OpenVinoSession(data, what, threads)
    else:
        sess = _ort_session(data, what, threads, level, engine, cache, precision, spin)
    sess.engine = engine
    sess.parity = None
    if engine != "cpu" and parity:
        if stored is not None:
            worst = check_stored_parity(sess, stored, what)
            sess.parity = {"source": "stored images", "images": len(stored.images), "worst": worst,
                           "rtol": stored.rtol}
        else:
            worst = check_parity(sess, _ort_session(data, what, threads, level, "cpu", None), what)
            sess.parity = {"source": "seeded probe inputs against the CPU (the bundle stores no parity images)",
                           "images": 2, "worst": worst, "rtol": PARITY_RTOL}
            log.info("engine %s for %s: no stored parity images; checked on seeded probe inputs", engine, what)
    return sess


def _ort_session(data: bytes, what: str, threads: int, level: str, engine: str, cache: Path | None,
                 precision: str = "fp32", spin: bool = False) -> Any:
    providers = _providers(engine, cache, precision)
    if engine == "tensorrt" and cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - every inference plugin depends on it
        raise ImportError("ONNX Runtime is needed to run models: pip install onnxruntime") from exc
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    so.log_severity_level = 3  # ORT's notes on unused initializers are not the user's business
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Weights in external data files are refused: a bundle's manifest pins the graph file, and
    # ONNX Runtime would follow any location the graph names (even outside the bundle). The graph
    # is opened from its bytes with an empty folder for external data, so no such file is found.
    with tempfile.TemporaryDirectory(prefix="loupe-no-external-data-") as empty:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
        try:
            sess = ort.InferenceSession(data, so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            text = str(exc)
            if "xternal data" in text:
                raise BundleError(f"{what}: the graph keeps its weights in external data files, which Loupe "
                                  f"refuses (no manifest covers them); save the model with its weights inside "
                                  f"the .onnx file") from None
            raise BundleError(f"{what}: cannot open the ONNX graph: {text}") from None
    if engine != "cpu" and sess.get_providers()[0] != ENGINES[engine][0]:
        raise UsageError(f"engine {engine}: ONNX Runtime fell back to {sess.get_providers()[0]} "
                         f"(no usable GPU?): {INSTALL[engine]}")
    sess.engine = engine
    return sess


@dataclass(frozen=True)
class NodeArg:
    """An input or output as ONNX Runtime describes it (name, shape with ``None`` for free dims, type)."""

    name: str
    shape: list
    type: str


class OpenVinoSession:
    """OpenVINO's runtime behind ONNX Runtime's session interface (``run``, ``get_inputs``, ``get_outputs``).

    The ONNX graph is read by OpenVINO's ONNX front end and compiled for the CPU in f32, with
    one infer request reused frame after frame (a pipeline calls it from one thread).
    """

    def __init__(self, data: bytes, what: str, threads: int):
        import openvino as ov

        core = ov.Core()
        with tempfile.TemporaryDirectory(prefix="loupe-openvino-") as d:
            f = Path(d) / "model.onnx"
            f.write_bytes(data)
            try:
                model = core.read_model(str(f))
            except Exception as exc:
                text = str(exc)
                summary = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("-- Conversion")]
                first = summary[0][3:] if summary else (text.strip().splitlines() or [type(exc).__name__])[-1]
                raise UsageError(f"{what}: OpenVINO cannot read this graph ({first[:300]}); run it with "
                                 f"--engine cpu (INT8 bundles made by `loupe optimize --method int8` use "
                                 f"ONNX Runtime's quantised operators, which OpenVINO does not convert)") from None
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": max(1, int(threads)),
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._outputs = list(self._compiled.outputs)
        self._out_names = [o.get_any_name() for o in self._outputs]

        def arg(port) -> NodeArg:
            shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
            return NodeArg(port.get_any_name(), shape, f"tensor({port.get_element_type().get_type_name()})")

        self._in = [arg(p) for p in self._compiled.inputs]
        self._out = [arg(p) for p in self._outputs]
        self.engine = "openvino"

    def get_inputs(self) -> list[NodeArg]:
        return list(self._in)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._out)

    def get_providers(self) -> list[str]:
        return ["OpenVINO CPU (f32)"]

    def run(self, output_names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = self._request.infer(feed)
        got = [np.array(res[o]) for o in self._outputs]  # copies: the request's tensors are reused
        if not output_names:
            return got
        by_name = dict(zip(self._out_names, got))
        try:
            return [by_name[n] for n in output_names]
        except KeyError as exc:
            raise ValueError(f"no output {exc.args[0]!r}; outputs: {', '.join(self._out_names)}") from None


def probe_inputs(session: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the session's input shapes (free dims: 1), for parity checks and timing."""
    rng = np.random.default_rng(seed)
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        if "uint8" in i.type:
            feed[i.name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif "int" in i.type:
            feed[i.name] = rng.integers(0, 4, size=shape).astype(np.int64)
        else:
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def check_parity(session: Any, reference: Any, what: str, seeds: tuple[int, ...] = (0, 1)) -> float:
    """Run ``session`` and the CPU ``reference`` on seeded probe inputs; refuse the engine (``UsageError``)
    when an output differs by more than ``PARITY_RTOL`` of its largest magnitude. Returns the worst ratio."""
    worst = 0.0
    names = [o.name for o in reference.get_outputs()]
    for seed in seeds:
        feed = probe_inputs(reference, seed)
        want = reference.run(names, feed)
        got = session.run(names, feed)
        for name, a, b in zip(names, want, got):
            worst = max(worst, _compare(name, a, b, session, what, PARITY_RTOL, "seeded probe inputs"))
    return worst


def _compare(name: str, a: Any, b: Any, session: Any, what: str, rtol: float, source: str) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise UsageError(f"{what}: engine {session.engine}: output {name} has shape {b.shape}, the CPU's {a.shape}")
    scale = max(1e-6, float(np.abs(a).max()) if a.size else 1.0)
    err = float(np.abs(a - b).max()) / scale if a.size else 0.0
    if not err <= rtol:
        raise UsageError(f"{what}: engine {session.engine} does not match the CPU on {source}: output {name} "
                         f"differs by {err:.2e} of its scale (tolerance {rtol:g}); run it with --engine cpu")
    return err


def check_stored_parity(session: Any, stored: StoredParity, what: str) -> float:
    """Run the bundle's stored parity images through ``session`` (batch 1, as the line runs) and refuse the
    engine (``UsageError``) when an output differs from the stored CPU outputs by more than the bundle's
    ``rtol`` of its largest magnitude. Returns the worst ratio."""
    worst = 0.0
    names = list(stored.outputs)
    inp = session.get_inputs()[0]
    x = stored.images
    if x.dtype.kind == "f":
        x = x.astype(np.float16 if "float16" in inp.type else np.float32)
    got = [session.run(names, {inp.name: x[i:i + 1]}) for i in range(len(x))]
    for k, name in enumerate(names):
        b = np.concatenate([np.asarray(g[k]) for g in got])
        worst = max(worst, _compare(name, stored.outputs[name], b, session, what, stored.rtol, stored.where))
    return worst


def time_session(session: Any, runs: int = 10) -> float:
    """Median milliseconds per run on a probe input (after one warm-up run)."""
    feed = probe_inputs(session)
    session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _auto(data: bytes, what: str, threads: int, level: str, cache: Path | None,
          stored: StoredParity | None = None, precision: str = "fp32", spin: bool = False) -> Any:
    """Every usable engine that matches the CPU, timed on a probe input; the fastest wins."""
    best, best_ms, tried = None, float("inf"), []
    for engine in available_engines():
        try:
            sess = _build(data, what, threads, level, engine, cache, parity=True, stored=stored, precision=precision,
                          spin=spin)
            ms = time_session(sess)
        except (UsageError, BundleError) as exc:
            tried.append(f"{engine}: refused ({exc})")
            continue
        tried.append(f"{engine}: {ms:.2f} ms")
        if ms < best_ms:
            best, best_ms = sess, ms
    if best is None:
        raise UsageError(f"{what}: no engine could run this graph ({'; '.join(tried)})")
    log.info("engine auto for %s: %s (%s)", what, best.engine, "; ".join(tried))
    best.auto_probe = tried
    return best
