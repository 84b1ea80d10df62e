"""``loupe demo``: the whole loop on a built-in default, through the same API as the CLI.

1. the anomaly trainer writes a small sample data set (textured surfaces with subtle
   scratches, spots and dents, exact masks, MVTec AD layout);
2. it trains an anomaly model on the good images only, into a bundle;
3. a recipe that mixes a classical lighting check with the anomaly tool is saved
   (the model pinned by its sha256), validated and run over the test images;
4. the results land in SQLite, CSV and an HTML report with heatmaps; the bundle is
   evaluated (AUROC, pixel AUROC) with plots.

Nothing here names a plugin: the steps are found in the catalogue by task and tool id,
and a missing one is reported with the distribution to install.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..core.bundle import model_sha256
from ..core.contracts import Command
from ..core.errors import UsageError
from ..core.recipe import Recipe
from ..core.runner import new_run_info, open_reporter, open_source, run_recipe
from .support import CliProgress


class DemoCommand(Command):
    """``loupe demo``: sample data, training, a saved recipe run, an HTML report."""

    name = "demo"
    help = "build sample data, train, run a saved recipe, write an HTML report"

    def add_arguments(self, s: argparse.ArgumentParser) -> None:
        s.add_argument("--workdir", default="loupe-demo", help="where the demo writes (default ./loupe-demo)")
        s.add_argument("-q", "--quiet", action="store_true")

    def run(self, args: argparse.Namespace) -> int:
        return run_demo(args.plugin_manager, Path(args.workdir), quiet=args.quiet)

NEEDS = {
    ("trainers", "anomaly"): "loupe-trainer",
    ("runtimes", "anomaly"): "loupe-dl-anomaly",
    ("tools", "anomaly.patchcore"): "loupe-dl-anomaly",
    ("tools", "classical.intensity"): "loupe-classical",
    ("sources", "folder"): "loupe-classical",
}


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run_demo(pm, workdir: Path, quiet: bool = False) -> int:
    cat = pm.catalogue
    missing = sorted({dist for (table, key), dist in NEEDS.items() if key not in getattr(cat, table)})
    if missing:
        raise UsageError(f"loupe demo needs {', '.join(missing)} (pip install ./plugins/...; `make demo` installs all)")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    trainer = cat.trainers["anomaly"].cls()

    _say(f"[1/4] writing sample data under {workdir / 'data'}", quiet)
    data = trainer.make_sample_data(workdir / "data", seed=0)
    if data is None:
        raise UsageError("the installed anomaly trainer has no sample data set")

    _say("[2/4] training an anomaly model on the good images only", quiet)
    bundle_path = workdir / "models" / f"{data.name}.bundle"
    progress = CliProgress(quiet=quiet)
    try:
        bundle = trainer.train(data, bundle_path, trainer.Params(), progress)
    finally:
        progress.close()

    _say("[3/4] saving and running the inspection recipe", quiet)
    recipe_path = workdir / "inspect.yaml"
    for old in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "results.csv"):
        (workdir / old).unlink(missing_ok=True)  # a fresh demo, not appended to the last one
    recipe_path.write_text(_recipe_text(data, bundle_path, workdir, _lighting_range(pm, data)))
    recipe = Recipe.load(recipe_path, cat)
    source = open_source(recipe.doc.source, cat, base_dir=recipe.base_dir)
    run = new_run_info(recipe, recipe.doc.source.spec, pm)
    reporters = [open_reporter(spec, cat, run, base_dir=recipe.base_dir) for spec in recipe.doc.report]
    keys: dict[str, str] = {}
    summary = run_recipe(recipe, source, reporters, pm, run,
                         on_frame=lambda r: keys.__setitem__(r.key, r.verdict))

    _say("[4/4] evaluating the model on the labelled test split", quiet)
    progress = CliProgress(quiet=quiet)
    try:
        metrics = cat.runtimes["anomaly"].cls().evaluate(bundle, data, workdir / "eval", progress)
    finally:
        progress.close()

    good = [v for k, v in keys.items() if Path(k).parent.name == "good"]
    bad = [v for k, v in keys.items() if Path(k).parent.name != "good"]
    c = summary.counts
    print(f"\nLoupe demo ({workdir})")
    print(f"  recipe    {recipe_path.name}: {summary.frames} images, {c['pass']} pass, {c['review']} review, "
          f"{c['fail']} fail, {c['error']} error, {1e3 * summary.seconds / max(summary.frames, 1):.1f} ms/image")
    print(f"  verdicts  good parts passed: {good.count('pass')}/{len(good)}; "
          f"defective parts stopped (fail or review): {sum(v != 'pass' for v in bad)}/{len(bad)}")
    print(f"  model     image AUROC {metrics.get('image_auroc', float('nan')):.3f}, "
          f"pixel AUROC {metrics.get('pixel_auroc', float('nan')):.3f}, F1 {metrics.get('f1', float('nan')):.3f} "
          f"at the stored threshold")
    print(f"  report    {workdir / 'report' / 'index.html'}")
    print(f"  results   {workdir / 'results.sqlite'}, {workdir / 'results.csv'}")
    print(f"  eval      {workdir / 'eval'}")
    print(f"  bundle    {bundle_path} (sha256 {bundle.sha256[:16]})")
    return 0


def _lighting_range(pm, data: Path) -> tuple[float, float]:
    """The lighting check's limits: the good training images' mean gray level ± 25%."""
    cat = pm.catalogue
    tool_cls = cat.tools["classical.intensity"].cls
    tool = tool_cls(tool_cls.Params())
    source = open_source(f"folder:{data / 'train' / 'good'}", cat)
    means = [tool.inspect(f.image).measurements["mean"] for f in source.frames() if f.image is not None]
    if not means:
        raise UsageError(f"{data}: no readable training images")
    lo, hi = min(means), max(means)
    return round(lo * 0.75, 1), round(min(hi * 1.25, 255.0), 1)


def _recipe_text(data: Path, bundle: Path, workdir: Path, lighting: tuple[float, float]) -> str:
    doc = {
        "loupe_recipe": 1,
        "name": f"{data.name} surface inspection",
        "description": "lighting check (classical) and surface anomalies (trained on good parts only)",
        "requires": {"loupe-classical": ">=0.1", "loupe-dl-anomaly": ">=0.1"},
        "source": {"spec": f"folder:{data.relative_to(workdir) / 'test'}", "recursive": True},
        "inspect": [
            {"tool": "classical.intensity", "name": "lighting",
             "limits": {"mean": {"min": lighting[0], "max": lighting[1]}}},
            {"tool": "anomaly.patchcore", "name": "surface",
             "params": {"model": {"path": str(bundle.relative_to(workdir)), "sha256": model_sha256(bundle)}},
             # score 1.0 is the threshold fitted on good images; up to 1.25 goes to review
             "limits": {"score": {"max": 1.0, "review_max": 1.25}}},
        ],
        "report": ["sqlite:results.sqlite", "csv:results.csv", "html:report"],
    }
    return "# Written by `loupe demo`: run it again with `loupe run inspect.yaml`\n" + yaml.safe_dump(doc, sort_keys=False)
