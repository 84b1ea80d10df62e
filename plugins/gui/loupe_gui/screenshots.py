"""``python -m loupe_gui.screenshots OUT_DIR``: PNGs of every workspace, driven like a user would.

Builds small demo data (a washer tray folder, a few Fashion-MNIST classes),
opens a recipe, runs it, trains a small classifier with the installed trainer
(when there is one) and captures frames into a dataset. Run it offscreen:
``QT_QPA_PLATFORM=offscreen python -m loupe_gui.screenshots screenshots/``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml


def must(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"screenshots: timed out waiting for {what}")


def wait_for(signal, start=None, timeout: float = 600.0, check=None) -> bool:
    """Call ``start()`` and run the event loop until ``signal`` is emitted (with arguments ``check`` accepts);
    the workspaces' ``idle`` signals say when a job's results are all on screen."""
    from PyQt5 import QtCore

    loop = QtCore.QEventLoop()
    fired = []

    def got(*args):
        if check is None or check(*args):
            fired.append(args)
            loop.quit()

    signal.connect(got)
    timer = QtCore.QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout * 1000))
    try:
        if start is not None:
            start()
        if not fired:
            loop.exec_()
    finally:
        timer.stop()
        signal.disconnect(got)
    return bool(fired)


def shoot_recipe(win, recipe_path, shot) -> None:
    """The tray with a missing washer (a FAIL), the blob step selected; then an invalid edit's messages."""
    rw = win.recipe_ws
    wait_for(rw.idle, lambda: rw.open_recipe(recipe_path), 30)
    rw.show_frame(0)
    rw.select_step("inspect", 0)
    shot("recipe.png")
    rw.doc["inspect"][0]["params"]["min_area"] = -5
    rw.doc["inspect"][0]["limits"]["count"] = {"min": 12, "max": 10}
    rw.select_step("inspect", 0)
    rw.rebuild()
    rw.editor.set_step(rw.doc["inspect"][0], "inspect", rw._pre_names())
    rw.editor.show_problems(rw._problems_of(("inspect", 0)))
    shot("recipe-validation.png")
    wait_for(rw.idle, lambda: rw.open_recipe(recipe_path), 30)


def shoot_run(win, work, shot) -> None:
    """The recipe over the tray folder into jsonl and html."""
    win.show_workspace("run")
    rv = win.run_ws
    rv.set_recipe(win.recipe_ws.recipe)
    for s, (chk, edit) in rv.report_rows.items():
        if s in ("jsonl", "html"):
            chk.setChecked(True)
            edit.setText(str(work / ("results.jsonl" if s == "jsonl" else "report")))
    wait_for(rv.idle, rv.start, 120)
    shot("run.png")


def shoot_train(win, app, work, out, shot, epochs: int) -> None:
    """A small Fashion-MNIST classifier: live curves, confusion matrix, one cell's images, heatmaps."""
    from .demo_data import fashion_classes

    win.show_workspace("train")
    tw = win.train_ws
    data = fashion_classes(work / "fashion", classes=(0, 2, 4, 6), n_train=40, n_test=15, upscale=2)
    must(wait_for(tw.idle, lambda: tw.set_data(data, task="classify"), 900), "the dataset analysis")
    if "classify" not in tw.catalogue.trainers:
        shot("train.png")
        return
    tw.out.setText(str(work / "fashion.bundle"))
    tw.adv_btn.setChecked(True)
    must(tw.train({"epochs": epochs, "input_size": 64, "batch_size": 16, "patience": epochs, "finetune_blocks": 4,
                   "max_minutes": 30.0}), "the trainer to start")
    # mid-training: once the first epoch's validation figures are on the curves (the trainer may stop early)
    must(wait_for(tw.progress.signals.updated, None, 1800,
                  check=lambda stage, done, total, metrics, training: stage.startswith("epoch ")
                  and "val_loss" in metrics), "the first epoch")
    shot("train-progress.png")
    must(wait_for(tw.idle, None, 3600), "the training")
    tw.adv_btn.setChecked(False)
    tw.tabs.setCurrentIndex(0)
    shot("train-results.png")
    cm = ((tw.result or {}).get("metrics") or {}).get("confusion_matrix")
    if cm:
        i, j = max(((i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j), key=lambda c: cm[c[0]][c[1]])
        dlg = tw.open_cell(i, j)
        app.processEvents()
        dlg.grab().save(str(out / "train-confusion-cell.png"))
        print(f"wrote {out / 'train-confusion-cell.png'}")
        dlg.close()
    tw.tabs.setCurrentIndex(2)
    shot("train-heatmaps.png")


def shoot_anomaly(win, work, shot) -> None:
    """A small PatchCore model on synthetic brushed metal (good images only): the score distribution where an
    epoch trainer's curves would be, the ROC, score histogram and threshold slider, the heatmaps."""
    tw = win.train_ws
    if "anomaly" not in tw.catalogue.trainers:
        return
    try:
        from loupe_trainer.samples import make_texture_dataset
    except ImportError:
        return
    adata = make_texture_dataset(work / "texture", "brushed_metal", n_train=20, n_test_good=12, n_test_defect=4,
                                 size=128)
    must(wait_for(tw.idle, lambda: tw.set_data(adata, task="anomaly"), 900), "the dataset analysis")
    tw.out.setText(str(work / "brushed_metal.bundle"))
    must(wait_for(tw.idle, lambda: tw.train({"image_size": 128}), 3600), "the anomaly training")
    tw.tabs.setCurrentIndex(1)
    shot("train-anomaly.png")
    tw.tabs.setCurrentIndex(2)
    shot("train-anomaly-heatmaps.png")


def shoot_collect(win, work, shot) -> None:
    """Play the tray folder as a live source, capture two labels."""
    win.show_workspace("collect")
    cw = win.collect_ws
    cw.set_source(f"folder:{work / 'images'}")
    cw.folder.setText(str(work / "collected"))
    wait_for(cw.frameShown, cw.start, 20)
    cw.label.setEditText("good")
    cw.capture()
    wait_for(cw.frameShown, None, 5)                   # the next live frame
    cw.capture()
    cw.label.setEditText("missing_part")
    cw.capture()
    shot("collect.png")
    wait_for(cw.idle, cw.stop, 10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loupe_gui.screenshots")
    ap.add_argument("out", nargs="?", default="screenshots")
    ap.add_argument("--workdir", help="where the demo data goes (default: a temporary folder)")
    ap.add_argument("--size", default="1600x960", help="window size WxH")
    ap.add_argument("--epochs", type=int, default=3, help="classifier epochs for the trainer screenshot")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="loupe-shots-"))
    work.mkdir(parents=True, exist_ok=True)

    from .app import MainWindow, make_app
    from .demo_data import PARTS_RECIPE, parts_folder

    app = make_app()
    w, h = (int(v) for v in args.size.split("x"))
    parts_folder(work / "images", n=6)
    recipe_path = work / "washers.yaml"
    recipe_path.write_text(yaml.safe_dump(PARTS_RECIPE, sort_keys=False))

    win = MainWindow()
    win.resize(w, h)
    win.show()
    app.processEvents()

    def shot(name: str) -> None:
        app.processEvents()
        path = out / name
        win.grab().save(str(path))
        print(f"wrote {path}")

    shoot_recipe(win, recipe_path, shot)
    shoot_run(win, work, shot)
    if args.skip_train:
        win.show_workspace("train")
        shot("train.png")
    else:
        shoot_train(win, app, work, out, shot, args.epochs)
        shoot_anomaly(win, work, shot)
    shoot_collect(win, work, shot)
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
