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
import time
from pathlib import Path

import yaml


def wait_until(app, cond, timeout: float = 600.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if cond():
            return True
        time.sleep(step)
    app.processEvents()
    return cond()


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
    from .demo_data import PARTS_RECIPE, fashion_classes, parts_folder

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

    # recipe workspace: the tray with a missing washer (a FAIL), the blob step selected
    rw = win.recipe_ws
    rw.open_recipe(recipe_path)
    rw.rebuild()
    rw.show_frame(0)
    rw.select_step("inspect", 0)
    wait_until(app, lambda: rw.result is not None, 10)
    shot("recipe.png")

    # an invalid edit shows inline validation messages
    rw.doc["inspect"][0]["params"]["min_area"] = -5
    rw.doc["inspect"][0]["limits"]["count"] = {"min": 12, "max": 10}
    rw.select_step("inspect", 0)
    rw.rebuild()
    rw.editor.set_step(rw.doc["inspect"][0], "inspect", rw._pre_names())
    rw.editor.show_problems(rw._problems_of(("inspect", 0)))
    shot("recipe-validation.png")
    rw.open_recipe(recipe_path)
    rw.rebuild()

    # run view over the folder
    win.show_workspace("run")
    rv = win.run_ws
    rv.set_recipe(rw.recipe)
    for s, (chk, edit) in rv.report_rows.items():
        if s in ("jsonl", "html"):
            chk.setChecked(True)
            edit.setText(str(work / ("results.jsonl" if s == "jsonl" else "report")))
    rv.start()
    wait_until(app, lambda: rv.worker is not None and rv.worker.isFinished(), 60)
    wait_until(app, lambda: rv.last_snapshot is not None and rv.last_snapshot["frames"] == 6, 5)
    shot("run.png")

    # trainer workspace
    win.show_workspace("train")
    tw = win.train_ws
    data = fashion_classes(work / "fashion", classes=(0, 2, 4, 6), n_train=40, n_test=15, upscale=2)
    tw.set_data(data, task="classify")
    wait_until(app, lambda: tw.summary is not None and not tw._busy(), 60)
    if "classify" in tw.catalogue.trainers and not args.skip_train:
        tw.out.setText(str(work / "fashion.bundle"))
        tw.adv_btn.setChecked(True)
        tw.train({"epochs": args.epochs, "input_size": 64, "batch_size": 16, "patience": 3, "finetune_blocks": 4,
                  "max_minutes": 3.0})
        wait_until(app, lambda: tw.progress is not None and tw.loss_chart.has_data(), 300)
        shot("train-progress.png")
        wait_until(app, lambda: tw.result is not None or (tw.job is not None and tw.job.error), 900)
        tw.adv_btn.setChecked(False)
        tw.tabs.setCurrentIndex(0)
        shot("train-results.png")
        tw.tabs.setCurrentIndex(2)
        shot("train-heatmaps.png")
    else:
        shot("train.png")

    # anomaly: a small PatchCore model on synthetic brushed metal (good images only), its ROC, score
    # histogram and threshold slider
    if "anomaly" in tw.catalogue.trainers and not args.skip_train:
        try:
            from loupe_trainer.samples import make_texture_dataset
        except ImportError:
            make_texture_dataset = None
        if make_texture_dataset is not None:
            adata = make_texture_dataset(work / "texture", "brushed_metal", n_train=20, n_test_good=12,
                                         n_test_defect=4, size=128)
            tw.result = None
            tw.set_data(adata, task="anomaly")
            wait_until(app, lambda: tw.summary is not None and not tw._busy(), 60)
            tw.out.setText(str(work / "brushed_metal.bundle"))
            tw.train({"image_size": 128})
            wait_until(app, lambda: tw.result is not None or (tw.job is not None and tw.job.error), 900)
            tw.tabs.setCurrentIndex(1)
            shot("train-anomaly.png")
            tw.tabs.setCurrentIndex(2)
            shot("train-anomaly-heatmaps.png")

    # collection: play the tray folder as a live source, capture two labels
    win.show_workspace("collect")
    cw = win.collect_ws
    cw.set_source(f"folder:{work / 'images'}")
    cw.folder.setText(str(work / "collected"))
    cw.start()
    wait_until(app, lambda: cw.current is not None, 20)
    cw.label.setEditText("good")
    cw.capture()
    wait_until(app, lambda: False, 0.3)
    cw.capture()
    cw.label.setEditText("missing_part")
    cw.capture()
    shot("collect.png")
    cw.stop()
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
