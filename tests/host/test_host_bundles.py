"""Model bundles: one typed schema checked at load, file names that stay inside the bundle, ONNX
external data refused, --out never deleting what is not a bundle, ``loupe bundle info``, and the one
ONNX Runtime session factory."""
from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from host import (Bundle, BundleError, BundleMeta, UsageError, available_engines, create_session, read_bundle_meta,
                  write_bundle)
from host.testing import run_loupe

ROOT = Path(__file__).resolve().parents[2]

ANOMALY = {"task": "anomaly", "model_file": "model.onnx", "input_size": [64, 64], "threshold": 2.5,
           "input": {"name": "image", "layout": "NCHW", "color": "RGB", "dtype": "float32", "range": [0, 255]},
           "normalisation": {"mean": [127.5] * 3, "std": [127.5] * 3, "in_graph": True},
           "tiling": None, "metrics": {"threshold": 2.5}}
CLASSIFY = {"task": "classify", "model_file": "model.onnx", "input_size": [32, 32], "classes": ["ok", "scratch"],
            "normalisation": {"color": "RGB", "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}}


def tiny_onnx(path: Path, external: str | None = None) -> Path:
    """A real ONNX graph (image (1,3,4,4) -> mean), optionally with its weights in an external file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((1, 3, 4, 4), 0.5, np.float32), "w")
    g = helper.make_graph([helper.make_node("Mul", ["image", "w"], ["m"]), helper.make_node("ReduceMean", ["m"], ["y"])],
                          "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external, size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def raw_bundle(folder: Path, meta_text: str, files: dict[str, bytes] | None = None,
               manifest_names: dict[str, str] | None = None) -> Path:
    """A bundle written by hand (any bundle.json text), with a manifest that hashes what is there."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"model.onnx": b"graph", **(files or {})}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "bundle.json").write_text(meta_text)
    digests = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in [*files, "bundle.json"]}
    digests.update(manifest_names or {})
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "files": digests}))
    return folder


def cli(capsys, *args) -> tuple[int, str, str]:
    """The ``loupe`` command line in-process (fast); returns (exit code, stdout, stderr)."""
    from host.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------ schema


def test_bundle_meta_is_typed_and_checked_for_every_task(tmp_path):
    a = write_bundle(tmp_path / "a", ANOMALY, {"model.onnx": b"graph"})
    assert isinstance(a.info, BundleMeta) and a.info.threshold == 2.5 and a.info.input_size == (64, 64)
    assert a.info.normalisation.in_graph and a.info.input.color == "RGB" and a.model_file == a.path / "model.onnx"
    c = write_bundle(tmp_path / "c", CLASSIFY, {"model.onnx": b"graph"})
    assert c.info.classes == ["ok", "scratch"] and not c.info.normalisation.in_graph
    # a task's own typed fields, in a typed way
    class SegmentMeta(BundleMeta):
        n_classes: int

    s = write_bundle(tmp_path / "s", {"task": "segment", "input_size": [8, 8], "n_classes": 3}, {"model.onnx": b"g"})
    assert s.meta_as(SegmentMeta).n_classes == 3
    with pytest.raises(BundleError, match="n_classes"):
        c.meta_as(SegmentMeta)
    # nothing is written when the metadata is malformed
    with pytest.raises(BundleError, match="threshold"):
        write_bundle(tmp_path / "bad", {**ANOMALY, "threshold": None}, {"model.onnx": b"graph"})
    assert not (tmp_path / "bad").exists()


def test_old_classify_bundles_with_model_key_still_load(tmp_path):
    """Classification bundles written before the schema named the graph ``model``; both tasks now say
    ``model_file``, and the old key still loads."""
    old = {k: v for k, v in CLASSIFY.items() if k != "model_file"} | {"model": "model.onnx"}
    b = Bundle.load(raw_bundle(tmp_path / "old", json.dumps(old)))
    assert b.info.model_file == "model.onnx" and b.model_file.name == "model.onnx"
    new = write_bundle(tmp_path / "new", old, {"model.onnx": b"graph"})
    assert "model_file" in new.meta and "model" not in new.meta


MALFORMED = {
    "a_list": ("[1, 2, 3]", "a mapping of fields"),
    "deep_nesting": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "zero_tile": (json.dumps({**ANOMALY, "tiling": {"tile": [0, 0], "overlap": 0.25}}), "tiling.tile.0"),
    "infinite_threshold": (json.dumps(ANOMALY).replace('"threshold": 2.5', '"threshold": Infinity'),
                           "threshold: Input should be a finite number"),
    "huge_input": (json.dumps({**ANOMALY, "input_size": [100000, 100000]}), "input_size.0"),
    "no_classes": (json.dumps({k: v for k, v in CLASSIFY.items() if k != "classes"}), "a classify bundle needs classes"),
    "model_outside": (json.dumps({**ANOMALY, "model_file": "../../outside.onnx"}), "model_file"),
    "not_json": ("{task: anomaly", "unreadable"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bundle_json_exits_2_with_one_message(tmp_path, case, capsys):
    text, needle = MALFORMED[case]
    b = raw_bundle(tmp_path / "b", text)
    with pytest.raises(BundleError, match=re.escape(needle)):
        Bundle.load(b)
    for args in (("bundle", "info", b), ("bench", b)):
        code, out, err = cli(capsys, *args)
        assert code == 2, (args, out, err[-2000:])
        assert "Traceback" not in err and needle in err
        assert len(err.strip().splitlines()) == 1, err
        assert str(b / "bundle.json") in err
    if case == "infinite_threshold":  # and as a user runs it, in a subprocess
        r = run_loupe("eval", b, tmp_path)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ file names


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/hostname", "sub/model.onnx", "..", ""])
def test_manifest_names_stay_inside_the_bundle(tmp_path, name, capsys):
    (tmp_path / "outside.onnx").write_bytes(b"x")
    b = raw_bundle(tmp_path / "b", json.dumps(ANOMALY), manifest_names={name: "0" * 64})
    with pytest.raises(BundleError, match="bad bundle file name"):
        Bundle.load(b)
    code, _, err = cli(capsys, "bundle", "info", b)
    assert code == 2 and "bad bundle file name" in err and "Traceback" not in err


def test_symlinked_bundle_files_are_refused(tmp_path):
    target = tmp_path / "elsewhere.onnx"
    target.write_bytes(b"graph")
    b = raw_bundle(tmp_path / "b", json.dumps(ANOMALY))
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to(target)
    with pytest.raises(BundleError, match="symlink"):
        Bundle.load(b)
    with pytest.raises(BundleError, match="bad bundle file name"):
        write_bundle(tmp_path / "w", ANOMALY, {"model.onnx": b"g", "../x": b"y"})


def test_onnx_external_data_is_refused(tmp_path):
    """A graph whose weights live in an external file is refused by the one session factory, whether or
    not the file is in the manifest (today zeroing 1 MB of weights.bin kept the recipe's hash valid)."""
    ext = tmp_path / "ext"
    ext.mkdir()
    tiny_onnx(ext / "model.onnx", external="weights.bin")
    with pytest.raises(BundleError, match="external data"):
        create_session(ext / "model.onnx")
    # a copy of weights.bin in the working directory is not picked up either
    inline = tiny_onnx(tmp_path / "inline.onnx")
    sess = create_session(inline, threads=1)
    y = sess.run(None, {"image": np.full((1, 3, 4, 4), 2.0, np.float32)})[0]
    assert float(np.ravel(y)[0]) == pytest.approx(1.0)
    # through a runtime: an anomaly bundle with external weights, covered by its manifest
    b = write_bundle(tmp_path / "b", ANOMALY, {"model.onnx": ext / "model.onnx",
                                               "weights.bin": (ext / "weights.bin").read_bytes()})
    from loupe_dl_anomaly.runtime import AnomalyModel

    with pytest.raises(BundleError, match="external data"):
        AnomalyModel(Bundle.load(b.path), threads=1)


def test_session_factory_is_the_only_place(tmp_path):
    assert "cpu" in available_engines()
    with pytest.raises(UsageError, match="unknown engine 'warp'"):
        create_session(tiny_onnx(tmp_path / "m.onnx"), engine="warp")
    # idle threads sleep unless a caller asks for ONNX Runtime's spinning ones
    def spinning(sess):
        try:
            return sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:  # not set: ONNX Runtime's default, spinning
            return None

    assert spinning(create_session(tmp_path / "m.onnx", 2)) == "0"
    assert spinning(create_session(tmp_path / "m.onnx", 2, spin=True)) is None
    hits = []
    for folder in ("host", "plugins"):
        for f in (ROOT / folder).rglob("*.py"):
            if "tests" in f.parts or f.name == "sessions.py":
                continue
            if "InferenceSession(" in f.read_text(encoding="utf-8"):
                hits.append(str(f.relative_to(ROOT)))
    assert hits == []


# ------------------------------------------------------------------ --out and bundle info


def test_out_never_deletes_what_is_not_a_bundle(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("keep me")
    data = tmp_path / "data"
    (data / "train" / "good").mkdir(parents=True)
    r = run_loupe("train", "anomaly", data, "--out", ".", "-q", cwd=work)
    assert r.returncode == 2 and "not a model bundle" in r.stderr, r.stderr
    assert (work / "precious.txt").read_text() == "keep me"
    bundle = write_bundle(tmp_path / "b", ANOMALY, {"model.onnx": b"graph"})
    r = run_loupe("optimize", bundle.path, "--method", "fp16", "--out", ".", "-q", cwd=work)
    assert r.returncode == 2 and "not a model bundle" in r.stderr, r.stderr
    assert (work / "precious.txt").read_text() == "keep me"
    with pytest.raises(UsageError, match="not a model bundle"):
        write_bundle(work, ANOMALY, {"model.onnx": b"graph"})
    assert (work / "precious.txt").exists()
    again = write_bundle(bundle.path, {**ANOMALY, "threshold": 3.0}, {"model.onnx": b"graph"})  # a bundle: replaced
    assert again.info.threshold == 3.0


def test_bundle_info_prints_the_full_hash_and_a_recipe_step(tmp_path):
    bundle = write_bundle(tmp_path / "models" / "metal.bundle", ANOMALY, {"model.onnx": b"graph"})
    r = run_loupe("bundle", "info", "models/metal.bundle", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"sha256     {bundle.sha256}" in r.stdout and len(bundle.sha256) == 64
    assert "task       anomaly" in r.stdout and "threshold  2.5" in r.stdout
    snippet = r.stdout.split("recipe step (paste under inspect:):\n", 1)[1]
    (tmp_path / "images").mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text("loupe_recipe: 1\nsource: folder:images\ninspect:\n" + textwrap.indent(snippet, "  "))
    v = run_loupe("validate", recipe)
    assert v.returncode == 0, (snippet, v.stderr)
    d = json.loads(run_loupe("bundle", "info", bundle.path, "--json").stdout)
    assert d["sha256"] == bundle.sha256 and d["recipe_step"]["tool"] == "anomaly.patchcore"
    assert d["files"]["model.onnx"] == hashlib.sha256(b"graph").hexdigest()


def test_log_json_is_kept_out_of_the_hash(tmp_path):
    a = write_bundle(tmp_path / "a", ANOMALY, {"model.onnx": b"graph"}, log={"train_s": 1.0, "host": "x"})
    b = write_bundle(tmp_path / "b", ANOMALY, {"model.onnx": b"graph"}, log={"train_s": 2.0, "host": "y"})
    assert a.sha256 == b.sha256 and a.log["train_s"] == 1.0 and "log.json" not in a.files
    assert read_bundle_meta(a.meta).task == "anomaly"


def test_retraining_with_the_same_seed_gives_the_same_hash(tmp_path):
    """Same data, same seed: the same sha256 (wall times live in log.json, outside the manifest); and
    ``loupe train`` prints the full hash."""
    from loupe_trainer.samples import make_texture_dataset

    data = make_texture_dataset(tmp_path, "brushed_metal", n_train=8, n_test_good=2, n_test_defect=1, size=64, seed=1)
    hashes = []
    for name in ("a", "b"):
        r = run_loupe("train", "anomaly", data, "--out", tmp_path / name, "--image-size", "64", "--max-bank", "256",
                      "-q", env={"OMP_NUM_THREADS": "1"}, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        m = re.search(r"^sha256 ([0-9a-f]{64})$", r.stdout, re.M)
        assert m, r.stdout
        b = Bundle.load(tmp_path / name)
        assert m.group(1) == b.sha256
        assert "train_s" in b.log and "train_s" not in json.dumps(b.meta)
        hashes.append(b.sha256)
    assert hashes[0] == hashes[1]


def test_model_input_normalisation_matches_the_arithmetic():
    """``normalise`` takes a per-channel table for uint8 batches: it must give exactly the float32 values of
    ``(x * scale - mean) / std``, for the default and for an ImageNet-style normalisation, and floats still work."""
    from host import DEFAULT_NORMALISATION, normalise

    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    batch[0, 0, :3] = [[0, 0, 0], [255, 255, 255], [128, 1, 254]]
    imagenet = {"color": "RGB", "scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    for norm in (DEFAULT_NORMALISATION, imagenet):
        mean = np.asarray(norm["mean"], np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(norm["std"], np.float32).reshape(1, 3, 1, 1)
        want = (batch.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(norm["scale"]) - mean) / std
        got = normalise(batch, norm)
        assert got.dtype == np.float32 and got.shape == (2, 3, 37, 53) and got.flags.c_contiguous
        assert np.array_equal(got, want)
        assert np.array_equal(normalise(batch.astype(np.float32), norm), want)
    assert normalise(batch[:, :1, :1], None)[0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0]
