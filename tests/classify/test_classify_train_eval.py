"""Train through the CLI, check the bundle, the export parity, `loupe eval` and its plots."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from host import Bundle, BundleError
from host.testing import run_loupe


def test_bundle_metadata_and_parity(tiny_bundle):
    b = Bundle.load(tiny_bundle)
    m = b.meta
    assert m["classes"] == ["sneaker", "trouser", "tshirt"]
    assert m["input_size"] == [64, 64]
    assert m["normalisation"]["mean"] == [0.5, 0.5, 0.5] and m["normalisation"]["color"] == "RGB"
    assert {"model.onnx", "cam_weights.npy", "cam_bias.npy"} <= set(b.files)
    assert m["parity"]["argmax_agreement"] == 1.0 and m["parity"]["max_abs_logit_diff"] < 2e-3
    assert m["training"]["n_train"] + m["training"]["n_val"] == 36
    assert "torch" in m["versions"] and "onnxruntime" in m["versions"]
    assert m["split"] is None  # a test folder exists: no held-out split


def test_cam_explains_the_logit(tiny_bundle, fmnist_small):
    """The heatmap is the class activation map: its mean over the map equals the logit."""
    from loupe_dl_classify.data import preprocess, read_image
    from loupe_dl_classify.model import Classifier

    clf = Classifier(Bundle.load(tiny_bundle))
    img = read_image(next((fmnist_small / "test" / "trouser").iterdir()))
    logits, feats = clf.run(preprocess([img], clf.size))
    k = feats.shape[1]
    # grid pooling: the head has a weight for every feature at every map position
    assert Bundle.load(tiny_bundle).meta["training"]["head"]["pooling"] == "grid"
    assert clf.cam_w.shape == (3, k) + feats.shape[2:]
    cams = np.einsum("ckhw,khw->chw", clf.cam_w, feats[0]) + clf.cam_b[:, None, None]
    np.testing.assert_allclose(cams.mean(axis=(1, 2)), logits[0], rtol=1e-4, atol=1e-4)
    p = clf.predict(img)
    assert p.heatmap.shape == clf.size and 0.0 <= p.heatmap.min() and p.heatmap.max() <= 1.0
    assert k == 384  # stages 4-6 of EfficientNet-Lite0: 80 + 112 + 192


@pytest.mark.parametrize("pooling", ["global", "grid"])
def test_head_as_cam_weights_round_trip(pooling):
    """The head written as CAM weights explains each logit exactly, and reading it back gives the same head."""
    import torch

    from loupe_trainer.classify.engine import ClassNet

    torch.manual_seed(0)
    net = ClassNet(4, pretrained=False, pooling=pooling).eval()
    torch.nn.init.normal_(net.fc.weight, std=0.1)
    x = torch.rand(2, 3, 80, 96) * 2 - 1
    with torch.no_grad():
        logits, fmap = net(x)
    h, w = fmap.shape[-2:]
    cw, cb = net.cam_weights(h, w)
    assert cw.shape == ((4, 384) if pooling == "global" else (4, 384, h, w))
    eq = "ck,nkhw->nchw" if cw.ndim == 2 else "ckhw,nkhw->nchw"
    cams = np.einsum(eq, cw, fmap.numpy()) + cb[None, :, None, None]
    np.testing.assert_allclose(cams.mean(axis=(2, 3)), logits.numpy(), rtol=1e-4, atol=1e-4)
    other = ClassNet(4, pretrained=False, pooling=pooling).eval()
    other.backbone.load_state_dict(net.backbone.state_dict())
    other.load_cam_weights(cw, cb)
    with torch.no_grad():
        np.testing.assert_allclose(other(x)[0].numpy(), logits.numpy(), rtol=1e-4, atol=1e-4)


def test_pooling_choice_by_cross_validation():
    """auto pooling picks grid when the class is *where* a feature is, and global when position is noise."""
    import torch

    from loupe_trainer.classify.engine import cross_validate_pooling, pool_matrix

    rng = np.random.default_rng(0)
    n, k, h, w = 120, 4, 6, 6
    y = np.repeat(np.arange(3), n // 3)
    p = pool_matrix(h, w, "grid")

    def pooled(maps):
        return torch.from_numpy((maps.reshape(n, k, h * w) @ p).reshape(n, -1).astype(np.float32))

    # the same feature for every class, at a class-specific place: identical global averages
    placed = rng.normal(0, 0.1, (n, k, h, w))
    for i, c in enumerate(y):
        r, col = [(0, 0), (0, 4), (4, 2)][c]
        placed[i, 0, r:r + 2, col:col + 2] += 3.0
    cv = cross_validate_pooling(pooled(placed), y, 1, k, p.shape[1], 0.1, 0)
    assert cv["grid"] > 0.9 and cv["grid"] > cv["global"] + 0.3
    # a class-specific feature anywhere on the map: the cells add nothing but noise
    anywhere = rng.normal(0, 0.1, (n, k, h, w))
    for i, c in enumerate(y):
        r, col = rng.integers(0, 5, 2)
        anywhere[i, c, r:r + 2, col:col + 2] += 3.0
    cv = cross_validate_pooling(pooled(anywhere), y, 1, k, p.shape[1], 0.1, 0)
    assert cv["global"] > 0.9 and cv["global"] >= cv["grid"]


def test_eval_json_matches_sklearn(tiny_bundle, fmnist_small, tmp_path):
    from sklearn.metrics import confusion_matrix, precision_score, recall_score

    from loupe_dl_classify.data import read_image
    from loupe_dl_classify.model import Classifier

    out = tmp_path / "report"
    r = run_loupe("eval", tiny_bundle, fmnist_small, "--json", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    for key in ("task", "accuracy", "classes", "confusion_matrix", "per_class", "ms_per_image"):
        assert key in res
    assert res["task"] == "classify" and res["n_images"] == 45
    assert res["accuracy"] >= 0.8, res  # three classes: chance is 0.33

    # the same predictions, made independently, through sklearn
    clf = Classifier(Bundle.load(tiny_bundle))
    y_true, y_pred = [], []
    for i, c in enumerate(clf.classes):
        for f in sorted((fmnist_small / "test" / c).iterdir()):
            y_true.append(i)
            y_pred.append(clf.predict(read_image(f), heatmap=False).index)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(3)))
    assert res["confusion_matrix"] == cm.tolist()
    assert res["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    prec = precision_score(y_true, y_pred, average=None, labels=[0, 1, 2], zero_division=0)
    rec = recall_score(y_true, y_pred, average=None, labels=[0, 1, 2], zero_division=0)
    for i, c in enumerate(res["classes"]):
        assert res["per_class"][c]["precision"] == pytest.approx(prec[i])
        assert res["per_class"][c]["recall"] == pytest.approx(rec[i])

    # plots: confusion PNG coloured by host.confusion_style (green where recall >= 90 %), gallery, HTML
    from host import VERDICT_COLOURS

    png = cv2.imread(str(out / "confusion_matrix.png"))
    assert png is not None

    def bgr(status):
        c = VERDICT_COLOURS[status]
        return int(c[5:7], 16), int(c[3:5], 16), int(c[1:3], 16)

    rates = np.diag(cm) / cm.sum(1)
    for status, has in (("pass", (rates >= 0.9).any()), ("review", ((rates >= 0.7) & (rates < 0.9)).any()),
                        ("fail", (rates < 0.7).any())):
        assert (np.all(png == bgr(status), axis=2).sum() > 100) == bool(has), status
    html = (out / "index.html").read_text()
    assert "confusion_matrix.png" in html and f"{res['accuracy']:.4f}" in html
    wrong = len(y_true) - int(np.trace(cm))
    assert len(list((out / "misclassified").glob("*.png"))) == min(wrong, 60)


def test_eval_without_test_folder_uses_the_held_out_split(fmnist_small, tmp_path):
    """No test/: the trainer keeps a stratified 20% out and eval scores exactly those images."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(fmnist_small / "train", data / "train")
    out = tmp_path / "b"
    r = run_loupe("train", "classify", data, "--out", out, "--epochs", "0", "--input-size", "48", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = Bundle.load(out).meta
    assert meta["split"]["test_fraction"] == 0.2 and meta["split"]["n_test"] == 6  # round(0.2 * 12) = 2 per class
    r = run_loupe("eval", out, data, "--json")
    res = json.loads(r.stdout)
    assert res["n_images"] == meta["split"]["n_test"]
    assert sum(map(sum, res["confusion_matrix"])) == res["n_images"]
    assert "held-out" in res["split"]


def test_parity_check_fails_on_disagreement(fmnist_small, tmp_path):
    torch = pytest.importorskip("torch")
    from loupe_dl_classify.data import read_image, resize_to, to_rgb8
    from loupe_trainer.classify.engine import ClassNet
    from loupe_trainer.classify.export import export_onnx, parity_check

    net = ClassNet(3).eval()
    files = sorted((fmnist_small / "train" / "tshirt").iterdir())[:4]
    raw = [read_image(f) for f in files]
    rgb = np.stack([resize_to(to_rgb8(im), (48, 48)) for im in raw])
    path = tmp_path / "m.onnx"
    export_onnx(net, (48, 48), path)
    rep = parity_check(net, path, raw, rgb, (48, 48))
    assert rep["max_abs_logit_diff"] < 2e-3 and rep["argmax_agreement"] == 1.0
    with torch.no_grad():
        net.fc.weight.add_(torch.randn_like(net.fc.weight))  # the torch model no longer matches the graph
    with pytest.raises(BundleError, match="parity"):
        parity_check(net, path, raw, rgb, (48, 48))


def test_train_usage_errors(tmp_path):
    (tmp_path / "train" / "only").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "train" / "only" / "a.png"), np.zeros((8, 8), np.uint8))
    r = run_loupe("train", "classify", tmp_path, "--out", tmp_path / "b")
    assert r.returncode == 2 and "at least two classes" in r.stderr and "Traceback" not in r.stderr
    r = run_loupe("train", "classify", tmp_path, "--out", tmp_path / "b", "--input-size", "8")
    assert r.returncode == 2 and "--input-size" in r.stderr


def test_unlabelled_images_self_train_the_head(tmp_path):
    """DATA/unlabelled/ (any depth, never a class) refines the head with pseudo-labels: the most confident half of
    the images predicted as each class; an unreadable file is skipped and named; ``--max-unlabelled 0`` gives the
    model that the data without the folder gives; a spent time budget leaves the rest of the folder unread."""
    import shutil

    from loupe_trainer.classify.engine import pseudo_labelled
    from loupe_trainer.datasets import fashion_mnist_file, read_idx, write_class_folders

    from .conftest import CLASSES, FMNIST

    try:
        x = read_idx(fashion_mnist_file("t10k-images-idx3-ubyte", FMNIST))
        y = read_idx(fashion_mnist_file("t10k-labels-idx1-ubyte", FMNIST))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    # the DATA/<class>/ layout (no train/ folder), a test/ folder, and unlabelled/<class>/ (the trainer ignores
    # those sub-folder names; they let the test know the truth)
    data = write_class_folders(tmp_path / "data", x, y, CLASSES,
                               {"": slice(0, 6), "test": slice(200, 215), "unlabelled": slice(20, 40)})
    (data / "unlabelled" / "broken.png").write_bytes(b"not an image")
    lean = tmp_path / "data-lean"
    shutil.copytree(data, lean, ignore=shutil.ignore_patterns("unlabelled"))
    args = ["--epochs", "0", "--input-size", "48", "--pooling", "grid", "--val-fraction", "0", "-q"]
    for src, out, extra in [(data, "self", []), (data, "off", ["--max-unlabelled", "0"]), (lean, "lean", [])]:
        r = run_loupe("train", "classify", src, "--out", tmp_path / out, *args, *extra,
                      env={"OMP_NUM_THREADS": "2"})
        assert r.returncode == 0, r.stderr[-3000:]
    meta = Bundle.load(tmp_path / "self").meta
    assert meta["classes"] == sorted(CLASSES.values())          # unlabelled/ and test/ are not classes
    st = meta["metrics"]["self_training"]
    assert st["unlabelled"] == 60 and st["share"] == 0.5
    assert sum(st["per_class"]) == st["pseudo_labelled"]
    # 20 images of each class: a model that predicts about 20 per class keeps ceil(0.5 n) of each
    assert all(8 <= n <= 12 for n in st["per_class"]), st
    assert any(p.endswith("broken.png") for p in meta["training"]["skipped_files"])
    assert "self-trained" in meta["training"]["method"]
    assert "self_training" not in Bundle.load(tmp_path / "off").meta["metrics"]
    assert (tmp_path / "off" / "model.onnx").read_bytes() == (tmp_path / "lean" / "model.onnx").read_bytes()
    assert (tmp_path / "self" / "model.onnx").read_bytes() != (tmp_path / "off" / "model.onnx").read_bytes()
    res = json.loads(run_loupe("eval", tmp_path / "self", data, "--json").stdout)
    assert res["n_images"] == 45 and res["accuracy"] >= 0.85

    # the time budget covers the unlabelled images too: when it is spent, the batches read so far are used
    more = lean / "unlabelled"
    more.mkdir()
    for i in range(300):
        cv2.imwrite(str(more / f"{i:03d}.png"), x[1000 + i])
    r = run_loupe("train", "classify", lean, "--out", tmp_path / "cut", *args, "--max-minutes", "0.3",
                  env={"OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    st = Bundle.load(tmp_path / "cut").meta["metrics"]["self_training"]
    assert (st["unlabelled"], st["not_read"]) == (256, 44), st

    # the choice itself: per predicted class, the most confident ceil(share * n), at least one
    probs = np.array([[0.9, 0.1, 0], [0.6, 0.4, 0], [0.7, 0.3, 0], [0.2, 0.8, 0], [0.45, 0.55, 0], [0, 0.3, 0.7]])
    assert pseudo_labelled(probs, 0.5).tolist() == [0, 2, 3, 5]
    assert pseudo_labelled(probs, 1.0).tolist() == list(range(6))
    assert pseudo_labelled(probs, 0.01).tolist() == [0, 3, 5]
