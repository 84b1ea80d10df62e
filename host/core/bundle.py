"""Self-describing model bundles.

A bundle is a folder::

    model.onnx          the graph(s): any number of files
    bundle.json         metadata: task, classes, input size, normalisation,
                        threshold(s), training-data summary, metrics, versions,
                        and the history of what was done to it (optimisation)
    manifest.json       {"format": 1, "files": {name: sha256}} over every other file
    log.json            (optional, not hashed) wall times and other facts of the run that made
                        it; kept out of the manifest so that the same data and seed give the
                        same bundle hash

The manifest is checked at load; a recipe names a bundle by path and by the
sha256 of its ``manifest.json`` (which pins every file through its hashes).
Nothing in a bundle is ever unpickled.

``bundle.json`` follows one typed schema, ``BundleMeta``, checked at load for
every task: a malformed file is a ``BundleError`` naming the file and the field.
File names in the manifest are plain names inside the bundle folder (no path
separators, no ``..``, not absolute) and no file of a bundle may be a symlink.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import BundleError, UsageError

MANIFEST = "manifest.json"
METADATA = "bundle.json"
LOG = "log.json"
FORMAT = 1
#: bundle.json and manifest.json are a few kilobytes; refuse anything absurd before parsing it
MAX_JSON_BYTES = 16 << 20
#: the largest model input side (a model that wants 100000² input is a broken bundle)
MAX_INPUT_SIDE = 16384


def check_file_name(name: Any) -> str:
    """A bundle's file name: a plain name inside the bundle folder, or ``BundleError``."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or Path(name).is_absolute() or ":" in name:
        raise BundleError(f"bad bundle file name {name!r}: a file of a bundle is named without any folder "
                          f"(no '/', no '..', not absolute)")
    return name


def _finite_list(v: list[float], what: str) -> list[float]:
    if len(v) not in (1, 3):
        raise ValueError(f"{what} has {len(v)} values; give 1 or 3 (one per colour channel)")
    return v


class ModelInput(BaseModel):
    """What the graph's input expects: name, layout, colour order, value type and the range of
    the pixel values before normalisation (``[0, 255]`` for 8-bit images)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = "image"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR", "GRAY"] = "RGB"
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    range: tuple[float, float] = (0.0, 255.0)


class Normalisation(BaseModel):
    """``(pixel * scale - mean) / std`` per channel; ``in_graph``: the graph does it itself
    (feed it pixels in ``input.range``)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [1.0, 1.0, 1.0])
    scale: float = Field(1.0, gt=0)
    in_graph: bool = False

    @field_validator("mean")
    @classmethod
    def _mean(cls, v):
        return _finite_list(v, "mean")

    @field_validator("std")
    @classmethod
    def _std(cls, v):
        return _finite_list(v, "std")


class Tiling(BaseModel):
    """A model run on overlapping tiles of the image, each of ``tile`` (height, width)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    tile: tuple[Annotated[int, Field(ge=8, le=MAX_INPUT_SIDE)], Annotated[int, Field(ge=8, le=MAX_INPUT_SIDE)]]
    overlap: float = Field(0.25, ge=0, lt=1)


class EngineParity(BaseModel):
    """The stored parity set (``engine_parity`` in ``bundle.json``): a few preprocessed training
    images (``inputs``, an ``.npy`` of the graph's input, N first) and the graph's outputs on
    them from ONNX Runtime's CPU provider (``outputs``: output name -> ``.npy`` file), all
    covered by the manifest. Opening the bundle on another engine runs the inputs and refuses
    the engine when an output differs by more than ``rtol`` of its largest magnitude.
    Written by ``write_bundle(..., parity_inputs=...)`` and refreshed whenever the graph changes."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    input: str = Field(min_length=1, max_length=200)
    inputs: str
    outputs: dict[str, str] = Field(min_length=1)
    rtol: float = Field(gt=0, le=1)
    images: int = Field(ge=1, le=64)

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: str) -> str:
        try:
            return check_file_name(v)
        except BundleError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, v: dict[str, str]) -> dict[str, str]:
        try:
            return {k: check_file_name(f) for k, f in v.items()}
        except BundleError as exc:
            raise ValueError(str(exc)) from None


#: fields a task cannot do without
TASK_FIELDS: dict[str, tuple[str, ...]] = {"anomaly": ("threshold",), "classify": ("classes",)}


class BundleMeta(BaseModel):
    """The typed form of ``bundle.json``, the same for every task.

    ``task``, ``model_file`` (the graph), ``input_size`` (height, width), ``input``
    (colour, range, layout), ``normalisation`` (and whether it is inside the graph),
    ``threshold`` (anomaly: the raw score that maps to 1.0), ``classes`` (classify),
    ``tiling``. Any other field (metrics, training summary, versions, ...) is kept as
    written; a task with more typed fields subclasses this model and reads the bundle
    with ``bundle.meta_as(SubClass)``. Bundles written before this schema, which named
    the graph ``model`` rather than ``model_file``, still load.
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    format: int = FORMAT
    task: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)
    model_file: str = "model.onnx"
    input_size: tuple[Annotated[int, Field(ge=1, le=MAX_INPUT_SIDE)], Annotated[int, Field(ge=1, le=MAX_INPUT_SIDE)]]
    input: ModelInput = Field(default_factory=ModelInput)
    normalisation: Normalisation | None = None
    threshold: float | None = None
    classes: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
    tiling: Tiling | None = None
    engine_parity: EngineParity | None = None

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(f"bundle metadata is a mapping of fields, got {type(data).__name__}")
        if "model_file" not in data and isinstance(data.get("model"), str):  # classify bundles before the schema
            data = {**data, "model_file": data["model"]}
            del data["model"]
        if isinstance(data.get("input_size"), int):
            data = {**data, "input_size": [data["input_size"], data["input_size"]]}
        return data

    @field_validator("model_file")
    @classmethod
    def _model_file(cls, v: str) -> str:
        try:
            return check_file_name(v)
        except BundleError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("classes")
    @classmethod
    def _classes(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError("class names must be unique")
        return v

    @model_validator(mode="after")
    def _task_fields(self) -> "BundleMeta":
        for name in TASK_FIELDS.get(self.task, ()):
            if getattr(self, name) is None:
                raise ValueError(f"a {self.task} bundle needs {name}")
        if self.task == "anomaly" and not (self.threshold or 0) > 0:
            raise ValueError(f"threshold must be positive, got {self.threshold}")
        if self.task == "classify" and len(self.classes or ()) < 1:
            raise ValueError("classes is empty")
        return self


def _meta_error(where: Path | str, exc: ValidationError) -> BundleError:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        parts.append(f"{loc}: {msg}" if loc else msg)
    return BundleError(f"{where}: " + "; ".join(parts))


def read_bundle_meta(meta: Any, where: Path | str = METADATA, model: type[BundleMeta] = BundleMeta) -> BundleMeta:
    """Validate a ``bundle.json`` mapping; ``BundleError`` names the file and every bad field."""
    try:
        return model.model_validate(meta)
    except ValidationError as exc:
        raise _meta_error(where, exc) from None
    except RecursionError:
        raise BundleError(f"{where}: nested too deeply") from None


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_JSON_BYTES:
        raise BundleError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MiB; not a bundle file")
    try:
        return json.loads(raw)
    except RecursionError:
        raise BundleError(f"{path}: unreadable: nested too deeply") from None
    except ValueError as exc:
        raise BundleError(f"{path}: unreadable: {exc}") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def model_sha256(path: str | Path) -> str:
    """The hash a recipe pins a model with: a bundle's manifest hash, or a file's own hash."""
    p = Path(path)
    if p.is_dir():
        if not (p / MANIFEST).is_file():
            raise BundleError(f"{p}: not a model bundle (no {MANIFEST})")
        return sha256_file(p / MANIFEST)
    return sha256_file(p)


@dataclass
class Bundle:
    """An opened bundle: ``meta`` is ``bundle.json`` as written (a dict), ``info`` its typed
    form (``BundleMeta``), ``files`` the manifest (name -> sha256)."""

    path: Path
    meta: dict[str, Any]
    files: dict[str, str]
    info: BundleMeta | None = None

    @property
    def task(self) -> str:
        return self.info.task if self.info is not None else str(self.meta.get("task", ""))

    @property
    def sha256(self) -> str:
        return sha256_file(self.path / MANIFEST)

    @property
    def model_file(self) -> Path:
        """The graph file named by ``model_file`` (``model`` in bundles before the schema)."""
        info = self.info or read_bundle_meta(self.meta, self.path / METADATA)
        return self.file(info.model_file)

    @property
    def log(self) -> dict[str, Any]:
        """``log.json`` (wall times and other unhashed facts of the run that made it), or {}."""
        try:
            data = _read_json(self.path / LOG)
        except BundleError:
            return {}
        return data if isinstance(data, dict) else {}

    def file(self, name: str) -> Path:
        check_file_name(name)
        if name not in self.files:
            raise BundleError(f"{self.path}: bundle has no file {name!r} in its manifest")
        return self.path / name

    def meta_as(self, model: type[BundleMeta]) -> BundleMeta:
        """``bundle.json`` validated by a task's own ``BundleMeta`` subclass (more typed fields)."""
        return read_bundle_meta(self.meta, self.path / METADATA, model)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "Bundle":
        """Open a bundle: safe file names, no symlinks, every file checked against the manifest's
        sha256, ``bundle.json`` checked against ``BundleMeta``."""
        p = Path(path)
        if not p.exists():
            raise BundleError(f"{p}: model bundle not found")
        if not (p / MANIFEST).is_file() or not (p / METADATA).is_file():
            raise BundleError(f"{p}: not a model bundle (needs {MANIFEST} and {METADATA})")
        for special in (MANIFEST, METADATA):
            if (p / special).is_symlink():
                raise BundleError(f"{p / special}: is a symlink; a bundle's files are its own")
        manifest = _read_json(p / MANIFEST)
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise BundleError(f"{p / MANIFEST}: unreadable manifest: expected {{\"files\": {{name: sha256}}}}")
        files = dict(files)
        for name in files:
            try:
                check_file_name(name)
            except BundleError as exc:
                raise BundleError(f"{p / MANIFEST}: {exc}") from None
            if (p / name).is_symlink():
                raise BundleError(f"{p}: {name} is a symlink; a bundle's files are its own")
        if verify:
            for name, digest in files.items():
                f = p / name
                if not f.is_file():
                    raise BundleError(f"{p}: file {name!r} listed in the manifest is missing")
                actual = sha256_file(f)
                if actual != digest:
                    raise BundleError(f"{p}: {name} fails its hash check (manifest {digest[:12]}…, "
                                      f"file {actual[:12]}…): the bundle was modified or corrupted")
        meta = _read_json(p / METADATA)
        if METADATA not in files or (verify and files[METADATA] != sha256_file(p / METADATA)):
            raise BundleError(f"{p}: {METADATA} is not covered by the manifest")
        info = read_bundle_meta(meta, p / METADATA)
        if info.model_file not in files:
            raise BundleError(f"{p / METADATA}: model_file {info.model_file!r} is not in the manifest")
        if info.engine_parity is not None:
            for name in (info.engine_parity.inputs, *info.engine_parity.outputs.values()):
                if name not in files:
                    raise BundleError(f"{p / METADATA}: engine_parity names {name!r}, which is not in the manifest")
        return cls(p, meta, files, info)


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a bundle's manifest and metadata."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file() and (p / METADATA).is_file()


def check_out_path(out: str | Path, what: str = "--out") -> Path:
    """Refuse an output path that exists and is not a bundle (it would be replaced).

    ``loupe train`` and ``loupe optimize`` replace the bundle at ``--out``; anything
    else there (the working directory, a data folder, a file) is never deleted.
    """
    p = Path(out)
    if p.is_symlink():
        raise UsageError(f"{what} {p}: is a symlink; give a new folder or an existing bundle")
    if p.exists() and not is_bundle(p):
        kind = "folder" if p.is_dir() else "file"
        if p.is_dir() and not any(p.iterdir()):
            return p  # an empty folder is fine
        raise UsageError(f"{what} {p}: a {kind} that is not a model bundle is there; Loupe replaces only "
                         f"bundles. Give a new path")
    return p


#: the stored parity set's file names (see ``EngineParity``)
PARITY_INPUTS = "parity_inputs.npy"
PARITY_OUTPUT = "parity_ref_{}.npy"
#: how many images a trainer stores for the engine parity check
PARITY_IMAGES = 2


def write_bundle(out: str | Path, meta: dict[str, Any], files: dict[str, str | Path | bytes],
                 log: dict[str, Any] | None = None, parity_inputs: Any = None) -> Bundle:
    """Write a bundle atomically: files (name -> source path or bytes), metadata, manifest.

    ``meta`` must pass ``BundleMeta`` (checked before anything is written). ``log``
    (wall times, ...) goes to ``log.json``, outside the manifest, so it never changes
    the bundle's hash. ``out`` is replaced only when it is a bundle (or absent).

    The bundle is assembled in a sibling temporary folder and renamed into place,
    so a crash never leaves a half-written bundle at ``out``. Every source is copied
    before ``out`` is replaced, so the sources may be ``out``'s own files (rewriting a
    bundle in place under new metadata).

    ``parity_inputs`` (an array of the graph's input, N first: a few preprocessed training
    images) makes the stored engine parity set (``EngineParity``): the inputs and the graph's
    outputs on ONNX Runtime's CPU provider. Every trainer passes it here, the one place; when
    it is not given but ``files`` carries a parity set (an optimiser writing a new graph, a
    rewrite under new metadata), the reference outputs are computed again from the new graph.
    """
    out = Path(out)
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    if "model_file" not in meta and isinstance(meta.get("model"), str):
        meta["model_file"] = meta.pop("model")
    read_bundle_meta(json.loads(json.dumps(meta, default=_json_default)), f"{out / METADATA} (to be written)")
    for name in files:
        check_file_name(name)
    files = _with_parity_set(meta, files, parity_inputs)
    read_bundle_meta(json.loads(json.dumps(meta, default=_json_default)), f"{out / METADATA} (to be written)")
    if out.exists() and not is_bundle(out) and not (out.is_dir() and not any(out.iterdir())):
        raise UsageError(f"{out}: something that is not a model bundle is there; Loupe replaces only bundles")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        digests: dict[str, str] = {}
        for name, src in files.items():
            if name in (MANIFEST, METADATA, LOG):
                raise ValueError(f"bad bundle file name {name!r}")
            dst = tmp / name
            if isinstance(src, bytes):
                dst.write_bytes(src)
            else:
                shutil.copyfile(src, dst)
            digests[name] = sha256_file(dst)
        (tmp / METADATA).write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default))
        digests[METADATA] = sha256_file(tmp / METADATA)
        (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": digests}, indent=2, sort_keys=True))
        if log:
            (tmp / LOG).write_text(json.dumps(log, indent=2, sort_keys=True, default=_json_default))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle.load(out)


def _npy_bytes(a: Any) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _with_parity_set(meta: dict[str, Any], files: dict[str, Any], parity_inputs: Any) -> dict[str, Any]:
    """Add (or refresh) the stored parity set: ``meta["engine_parity"]`` and its files (see ``write_bundle``)."""
    import numpy as np

    old = meta.get("engine_parity")
    files = dict(files)
    if parity_inputs is None:
        if not isinstance(old, dict) or old.get("inputs") not in files:
            meta.pop("engine_parity", None)  # no stored set (a bundle written before them): probes are used
            return files
        src = files[old["inputs"]]
        raw = src if isinstance(src, bytes) else Path(src).read_bytes()
        import io

        x = np.load(io.BytesIO(raw), allow_pickle=False)
    else:
        x = np.ascontiguousarray(parity_inputs)
    if isinstance(old, dict):  # the previous graph's reference outputs are replaced, never kept
        for name in (old.get("outputs") or {}).values():
            files.pop(name, None)
    model_name = meta.get("model_file", "model.onnx")
    if model_name not in files:
        raise BundleError(f"parity inputs given but no graph file {model_name!r} to run them on")
    src = files[model_name]
    from .sessions import PARITY_RTOL, create_session

    sess = create_session(src if isinstance(src, bytes) else Path(src), 1, engine="cpu", parity=False)
    inp = sess.get_inputs()[0]
    x = x.astype(np.float16 if "float16" in inp.type else np.float32) if x.dtype.kind == "f" else x
    names = [o.name for o in sess.get_outputs()]
    outs = [sess.run(names, {inp.name: x[i:i + 1]}) for i in range(len(x))]  # batch 1: every graph takes it
    files[PARITY_INPUTS] = _npy_bytes(x)
    refs = {}
    for k, name in enumerate(names):
        refs[name] = PARITY_OUTPUT.format(k)
        files[refs[name]] = _npy_bytes(np.concatenate([np.asarray(o[k]) for o in outs]))
    try:
        import onnxruntime

        ref = f"onnxruntime {onnxruntime.__version__} CPU provider, 1 thread, batch 1"
    except ImportError:  # pragma: no cover
        ref = "onnxruntime CPU provider"
    meta["engine_parity"] = {"input": inp.name, "inputs": PARITY_INPUTS, "outputs": refs, "images": int(len(x)),
                             "rtol": float(old.get("rtol", PARITY_RTOL)) if isinstance(old, dict) else PARITY_RTOL,
                             "reference": ref}
    return files


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
