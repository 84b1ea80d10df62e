"""Self-describing model bundles.

A bundle is a folder::

    model.onnx          the graph(s): any number of files
    bundle.json         metadata: task, classes, input size, normalisation,
                        threshold(s), training-data summary, metrics, versions,
                        and the history of what was done to it (optimisation)
    manifest.json       {"format": 1, "files": {name: sha256}} over every other file

The manifest is checked at load; a recipe names a bundle by path and by the
sha256 of its ``manifest.json`` (which pins every file through its hashes).
Nothing in a bundle is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BundleError

MANIFEST = "manifest.json"
METADATA = "bundle.json"
FORMAT = 1


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
    path: Path
    meta: dict[str, Any]
    files: dict[str, str]

    @property
    def task(self) -> str:
        return str(self.meta.get("task", ""))

    @property
    def sha256(self) -> str:
        return sha256_file(self.path / MANIFEST)

    def file(self, name: str) -> Path:
        if name not in self.files:
            raise BundleError(f"{self.path}: bundle has no file {name!r} in its manifest")
        return self.path / name

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "Bundle":
        """Open a bundle, checking every file against the manifest's sha256."""
        p = Path(path)
        if not p.exists():
            raise BundleError(f"{p}: model bundle not found")
        if not (p / MANIFEST).is_file() or not (p / METADATA).is_file():
            raise BundleError(f"{p}: not a model bundle (needs {MANIFEST} and {METADATA})")
        try:
            manifest = json.loads((p / MANIFEST).read_text())
            files = dict(manifest["files"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{p / MANIFEST}: unreadable manifest: {exc}") from None
        if verify:
            for name, digest in files.items():
                f = p / name
                if not f.is_file():
                    raise BundleError(f"{p}: file {name!r} listed in the manifest is missing")
                actual = sha256_file(f)
                if actual != digest:
                    raise BundleError(f"{p}: {name} fails its hash check (manifest {digest[:12]}…, "
                                      f"file {actual[:12]}…): the bundle was modified or corrupted")
        try:
            meta = json.loads((p / METADATA).read_text())
        except ValueError as exc:
            raise BundleError(f"{p / METADATA}: unreadable metadata: {exc}") from None
        if METADATA not in files or (verify and files[METADATA] != sha256_file(p / METADATA)):
            raise BundleError(f"{p}: {METADATA} is not covered by the manifest")
        return cls(p, meta, files)


def write_bundle(out: str | Path, meta: dict[str, Any], files: dict[str, str | Path | bytes]) -> Bundle:
    """Write a bundle atomically: files (name -> source path or bytes), metadata, manifest.

    The bundle is assembled in a sibling temporary folder and renamed into place,
    so a crash never leaves a half-written bundle at ``out``. Every source is copied
    before ``out`` is replaced, so the sources may be ``out``'s own files (rewriting a
    bundle in place under new metadata).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        digests: dict[str, str] = {}
        for name, src in files.items():
            if "/" in name or name in (MANIFEST, METADATA):
                raise ValueError(f"bad bundle file name {name!r}")
            dst = tmp / name
            if isinstance(src, bytes):
                dst.write_bytes(src)
            else:
                shutil.copyfile(src, dst)
            digests[name] = sha256_file(dst)
        meta = dict(meta)
        meta.setdefault("format", FORMAT)
        (tmp / METADATA).write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default))
        digests[METADATA] = sha256_file(tmp / METADATA)
        (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": digests}, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle.load(out)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
