"""Inference engines on a real anomaly bundle: OpenVINO matches the CPU, a missing engine is a clear
exit 2 (except under auto), int8 graphs OpenVINO cannot read are refused clearly, and `loupe bench`
compares engines side by side."""
from __future__ import annotations

import json

import numpy as np
import pytest

from host import PARITY_IMAGES, Bundle, UsageError, create_session, engine_status, resolve_engine, set_engine_override
from host.testing import run_loupe


def test_openvino_eval_matches_the_cpu(anomaly_bundle, texture_data, anomaly_eval):
    r = run_loupe("eval", anomaly_bundle, texture_data, "--json", "--engine", "openvino")
    assert r.returncode == 0, r.stderr
    ov = json.loads(r.stdout)
    cpu = anomaly_eval[1]
    assert ov["n_images"] == cpu["n_images"]
    for key in ("image_auroc", "pixel_auroc", "f1"):
        assert ov[key] == pytest.approx(cpu[key], abs=1e-3), key


def test_sessions_agree_and_auto_records_its_choice(anomaly_bundle):
    bundle = Bundle.load(anomaly_bundle)
    model = bundle.file(bundle.info.model_file)
    cpu = create_session(model, 1)
    ov = create_session(model, 1, engine="openvino")
    assert (cpu.engine, ov.engine) == ("cpu", "openvino")
    rng = np.random.default_rng(3)
    x = rng.standard_normal([1 if not isinstance(d, int) else d for d in cpu.get_inputs()[0].shape]).astype(np.float32)
    feed = {cpu.get_inputs()[0].name: x}
    for a, b in zip(cpu.run(None, feed), ov.run(None, feed)):
        assert np.allclose(a, b, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(a).max())))
    auto = create_session(model, 1, engine="auto")
    assert auto.engine in ("cpu", "openvino")
    assert any(line.startswith("cpu: ") for line in auto.auto_probe)


def test_an_engine_that_cannot_run_exits_2_naming_what_to_install(anomaly_bundle, texture_data):
    status = engine_status()
    assert status["cpu"] is None and status["openvino"] is None
    assert status["cuda"] is not None  # this machine has no GPU
    r = run_loupe("eval", anomaly_bundle, texture_data, "--json", "--engine", "cuda")
    assert r.returncode == 2, r.stderr
    assert "engine cuda cannot run here" in r.stderr and "onnxruntime-gpu" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_loupe("eval", anomaly_bundle, texture_data, "--json", env={"LOUPE_ENGINE": "tensorrt"})
    assert r.returncode == 2 and "engine tensorrt cannot run here" in r.stderr
    r = run_loupe("plugins", "--json")
    engines = json.loads(r.stdout)["engines"]
    assert engines["openvino"] is None and "onnxruntime-gpu" in engines["cuda"]


def test_engine_order_command_line_recipe_variable(monkeypatch):
    monkeypatch.setenv("LOUPE_ENGINE", "openvino")
    assert resolve_engine(None) == "openvino"
    assert resolve_engine("cpu") == "cpu"          # a recipe's engine: beats the variable
    set_engine_override("auto")
    try:
        assert resolve_engine("cpu") == "auto"     # --engine beats both
    finally:
        set_engine_override(None)
    monkeypatch.setenv("LOUPE_ENGINE", "gpu-please")
    with pytest.raises(UsageError, match="LOUPE_ENGINE: unknown engine 'gpu-please'"):
        resolve_engine(None)


def test_int8_graph_on_openvino_is_refused_clearly_and_auto_falls_back(anomaly_bundle, tmp_path):
    out = tmp_path / "int8"
    r = run_loupe("optimize", anomaly_bundle, "--method", "int8", "--out", out, "--keep-float", "stem", "block0")
    assert r.returncode == 0, r.stderr
    model = Bundle.load(out).file("model.onnx")
    with pytest.raises(UsageError, match="OpenVINO cannot read this graph"):
        create_session(model, 1, engine="openvino")
    assert create_session(model, 1, engine="auto").engine == "cpu"
    # made for OpenVINO: QDQ, no ONNX Runtime-only operators; its stored parity set was made from the int8 graph
    qdq = tmp_path / "int8-ov"
    r = run_loupe("optimize", anomaly_bundle, "--method", "int8", "--engine", "openvino", "--out", qdq,
                  "--keep-float", "stem", "block0")
    assert r.returncode == 0, r.stderr
    b = Bundle.load(qdq)
    assert b.meta["optimization"]["format"] == "qdq" and b.meta["engine_parity"]["images"] == PARITY_IMAGES
    assert b.files["parity_ref_1.npy"] != Bundle.load(anomaly_bundle).files["parity_ref_1.npy"]
    ov = create_session(b.model_file, 1, engine="openvino")
    assert ov.parity["source"] == "stored images" and ov.parity["worst"] <= b.info.engine_parity.rtol


def test_stored_parity_images_decide_and_old_bundles_fall_back_to_probes(anomaly_bundle, tmp_path):
    """OpenVINO is checked on the bundle's stored images; outputs beyond the stated tolerance refuse the engine;
    a bundle without stored images is checked on probes; the stored set is reproducible (no wall time)."""
    import hashlib
    import shutil

    from host import write_bundle

    bundle = Bundle.load(anomaly_bundle)
    ep = bundle.info.engine_parity
    assert ep is not None and ep.input == "image" and set(ep.outputs) == {"anomaly_map", "score"}
    x = np.load(bundle.file(ep.inputs))
    assert x.shape[0] == PARITY_IMAGES and x.dtype == np.float32
    ov = create_session(bundle.model_file, 1, engine="openvino")
    assert ov.parity["source"] == "stored images" and ov.parity["worst"] < ep.rtol
    # the same graph and images give the same files and the same bundle hash
    files = {n: bundle.path / n for n in bundle.files if n not in ("bundle.json", "manifest.json")}
    again = write_bundle(tmp_path / "again", bundle.meta, files)
    assert again.sha256 == bundle.sha256
    # stored outputs the engine does not reproduce (beyond rtol): refused, naming the stored images
    bad = tmp_path / "bad"
    shutil.copytree(anomaly_bundle, bad)
    score = bad / ep.outputs["score"]
    np.save(score, np.load(score) * 1.01)
    man = json.loads((bad / "manifest.json").read_text())
    man["files"][ep.outputs["score"]] = hashlib.sha256(score.read_bytes()).hexdigest()
    (bad / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(UsageError, match="does not match the CPU on .*stored images.*output score"):
        create_session(Bundle.load(bad).model_file, 1, engine="openvino")
    r = run_loupe("eval", bad, tmp_path, "--engine", "openvino")
    assert r.returncode == 2 and "stored images" in r.stderr and "Traceback" not in r.stderr
    assert create_session(Bundle.load(bad).model_file, 1, engine="auto").engine == "cpu"
    # a bundle from before stored parity sets: probes against the CPU, said so
    meta = {k: v for k, v in bundle.meta.items() if k != "engine_parity"}
    old = write_bundle(tmp_path / "old", meta, {"model.onnx": bundle.model_file})
    assert "engine_parity" not in old.meta and not any(n.startswith("parity") for n in old.files)
    ov = create_session(old.model_file, 1, engine="openvino")
    assert ov.parity["source"].startswith("seeded probe inputs")


def test_bench_compares_engines_side_by_side(anomaly_bundle, tmp_path):
    r = run_loupe("bench", anomaly_bundle, "--engine", "cpu", "--engine", "openvino", "--engine", "cuda",
                  "--limit", "4", "--json", "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    rows = {row["engine"]: row for row in json.loads(r.stdout)["rows"]}
    assert rows["cpu"]["status"] == "ok" and rows["cpu"]["max_diff_vs_cpu"] == 0.0
    assert rows["openvino"]["status"] == "ok" and rows["openvino"]["runs_on"] == "openvino"
    assert rows["openvino"]["max_diff_vs_cpu"] < 1e-3
    assert rows["cuda"]["status"].startswith("not usable")
    assert "| openvino | openvino |" in (tmp_path / "b" / "bench.md").read_text()


def test_recipe_and_station_choose_the_engine(anomaly_bundle, tmp_path):
    """engine: in a recipe reaches the anomaly tool's session; a station's engine: beats the recipe's."""
    from host import Recipe, create_plugin_manager
    from host.core.runner import Pipeline
    from host.core.station import Station, load_station

    sha = Bundle.load(anomaly_bundle).sha256
    (tmp_path / "r.yaml").write_text(f"""loupe_recipe: 1
name: r
engine: openvino
inspect:
  - tool: anomaly.patchcore
    params: {{model: {{path: "{anomaly_bundle}", sha256: {sha}}}}}
""")
    anomaly_pm = create_plugin_manager()
    recipe = Recipe.load(tmp_path / "r.yaml", anomaly_pm.catalogue)
    pipe = Pipeline(recipe)
    assert pipe._tools[0].model.session.engine == "openvino"
    pipe.close()
    (tmp_path / "images").mkdir()
    (tmp_path / "s.yaml").write_text("loupe_station: 1\njobs: {a: r.yaml}\nsource: folder:images\n"
                                      "engine: cpu\nstore: ['jsonl:out.jsonl']\n")
    station = Station(load_station(tmp_path / "s.yaml", anomaly_pm.catalogue), anomaly_pm)
    station.start()
    try:
        assert station._jobs["a"].pipeline._tools[0].model.session.engine == "cpu"
    finally:
        station.close()
