"""The ``loupe`` command line (a user-facing contract: names and outputs stay stable).

The core commands (plugins, tools, validate, run, train, eval, optimize) live here; the
host's other commands (``bench``, ``demo``, ``bundle``) are internal plugins in
``host/commands``, registered through ``loupe_commands`` like any plugin's.

Exit codes: 0 when the command completed, 2 for a usage, recipe, bundle or
plugin error (one clear message, no traceback), 1 for an unexpected failure,
130 when a run was stopped with Ctrl-C (after closing its reporters).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .commands.support import CliProgress, add_model_options, json_default, model_from_args, source_options
from .core.bundle import Bundle, check_out_path
from .core.errors import LoupeError, UsageError
from .core.manager import create_plugin_manager
from .core.recipe import Recipe, SourceDoc
from .core.runner import new_run_info, open_reporter, open_source, run_recipe
from .core.sessions import ENGINE_CHOICES, set_engine_override, set_eval_batch

DEFAULT_REPORT = "sqlite:loupe-results.sqlite"


# ------------------------------------------------------------------ commands


def cmd_plugins(pm, args) -> int:
    rows = []
    cat = pm.catalogue
    for p in pm.load_report.plugins:
        provides = sorted([k for k, e in cat.tools.items() if e.plugin == p.name]
                          + [f"source:{k}" for k, e in cat.sources.items() if e.plugin == p.name]
                          + [f"report:{k}" for k, e in cat.reporters.items() if e.plugin == p.name]
                          + [f"train:{k}" for k, e in cat.trainers.items() if e.plugin == p.name]
                          + [f"runtime:{k}" for k, e in cat.runtimes.items() if e.plugin == p.name]
                          + [f"optimize:{k}" for k, e in cat.optimizers.items() if e.plugin == p.name]
                          + [f"command:{k}" for k, e in cat.commands.items() if e.plugin == p.name]
                          + [f"line:{k}" for k, e in cat.line_adapters.items() if e.plugin == p.name])
        rows.append({"name": p.name, "distribution": p.distribution, "version": p.version, "module": p.module,
                     "hooks": p.hooks, "provides": provides, "error": p.error})
    from .core.sessions import engine_status

    engines = engine_status()
    if args.json:
        print(json.dumps({"host": __version__, "plugins": rows, "engines": engines}, indent=2))
        return 0
    print(f"loupe-host {__version__}")
    print("engines: " + ", ".join(name if why is None else f"{name} (not usable)" for name, why in engines.items())
          + "  (loupe plugins --json says why)")
    for r in rows:
        status = f"FAILED: {r['error']}" if r["error"] else ", ".join(r["hooks"])
        print(f"\n{r['name']}  ({r['distribution']} {r['version']})  {status}")
        if r["provides"]:
            print("    " + ", ".join(r["provides"]))
    failed = [r for r in rows if r["error"]]
    if failed:
        print(f"\n{len(failed)} plugin(s) failed to load", file=sys.stderr)
    return 0


def cmd_tools(pm, args) -> int:
    if getattr(args, "id", None):
        return _cmd_tool(pm, args)
    desc = pm.catalogue.describe()
    if args.json:
        print(json.dumps(desc, indent=2))
        return 0
    for stage in ("preprocess", "inspect"):
        tools = [t for t in desc["tools"] if t["stage"] == stage]
        print(f"{stage} tools ({len(tools)})")
        for t in tools:
            print(f"  {t['id']:<28} {t['description']}  [{t['distribution']}]")
            if t["measurements"]:
                print(f"  {'':<28} measures: {', '.join(t['measurements'])}")
        print()
    for key, label, name in (("sources", "sources", "scheme"), ("reporters", "reporters", "scheme"),
                             ("trainers", "trainers", "task"), ("runtimes", "model runtimes", "task"),
                             ("optimizers", "optimizers", "method"), ("line_adapters", "line adapters", "scheme")):
        items = desc[key]
        print(f"{label} ({len(items)})")
        for t in items:
            print(f"  {t[name]:<28} {t['description']}  [{t['distribution']}]")
        print()
    return 0


def _cmd_tool(pm, args) -> int:
    """``loupe tools ID``: one tool's parameters, measurements and an example step."""
    import difflib

    import yaml

    cat = pm.catalogue
    entry = cat.tool(args.id)
    if entry is None:
        hint = difflib.get_close_matches(args.id, list(cat.tools), n=3, cutoff=0.6)
        raise UsageError(f"unknown tool {args.id!r}" + (f"; did you mean {', '.join(map(repr, hint))}?" if hint
                                                        else "; `loupe tools` lists them"))
    d = cat.describe_tool(args.id)
    if args.json:
        print(json.dumps(d, indent=2, default=json_default))
        return 0
    print(f"{d['id']}  ({d['stage']} tool, {d['distribution']} {d['version']})")
    if d["description"]:
        print(f"  {d['description']}")
    print("\nparameters")
    for p in d["parameters"] or [{"name": "(none)", "type": "", "default": None, "required": False,
                                   "description": "", "constraints": ""}]:
        default = "required" if p["required"] else f"default {json.dumps(p['default'], default=str)}"
        extra = f"; {p['constraints']}" if p["constraints"] else ""
        print(f"  {p['name']:<20} {p['type']:<18} {default}{extra}")
        if p["description"]:
            print(f"  {'':<20} {p['description']}")
    if d["stage"] == "inspect":
        print("\nmeasurements (what limits may name)")
        for name, text in d["measurements"].items() or [("(none declared)", "")]:
            print(f"  {name:<20} {text}")
    print("\nexample step")
    print(yaml.safe_dump([d["example"]], sort_keys=False).rstrip())
    return 0


def cmd_validate(pm, args) -> int:
    from .core.station import is_station_file

    if is_station_file(args.recipe):  # a station file (loupe_station: 1)
        from .core.station import describe_station, load_station

        print(describe_station(load_station(args.recipe, pm.catalogue)))
        return 0
    recipe = Recipe.load(args.recipe, pm.catalogue)
    print(f"OK {args.recipe}: recipe {recipe.name!r}, {len(recipe.preprocess)} preprocess and "
          f"{len(recipe.inspect)} inspect steps, hash {recipe.hash[:16]}")
    return 0


def cmd_run(pm, args) -> int:
    cat = pm.catalogue
    recipe = Recipe.load(args.recipe, cat)
    if args.source:
        source_spec, source_base = args.source, Path.cwd()
        source_arg: str | SourceDoc = args.source
    elif recipe.doc.source is not None:
        source_arg = recipe.doc.source
        source_spec = source_arg.spec if isinstance(source_arg, SourceDoc) else source_arg
        source_base = recipe.base_dir
    else:
        raise UsageError(f"{args.recipe}: the recipe names no source; give one with --source folder:PATH")
    if args.report:
        specs, report_base = args.report, None
    elif recipe.doc.report:
        specs, report_base = recipe.doc.report, recipe.base_dir
    else:
        specs, report_base = [DEFAULT_REPORT], None
    source = open_source(source_arg, cat, base_dir=source_base, options=source_options(args.source_opt))
    run = new_run_info(recipe, source_spec, pm)
    run.resume = args.resume
    reporters = [open_reporter(s, cat, run, base_dir=report_base,
                               allow_outside=getattr(args, "allow_report_outside", False)) for s in specs]
    if args.executor:  # --executor NAME[:ADDRESS]: the run goes to a registered executor (e.g. loupe-ray)
        return _run_on_executor(pm, args, recipe, source, source_arg, source_base, reporters, run, specs)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        total = source.count()
        if args.limit is not None and total is not None:
            total = min(total, args.limit)
        bar = tqdm(total=total, desc=recipe.name, unit="img", dynamic_ncols=True, file=sys.stderr,
                   disable=None)

    def on_frame(result, _c={"pass": 0, "review": 0, "fail": 0, "error": 0}):
        if bar is not None:
            _c[result.verdict] += 1
            bar.update(1)
            if bar.n % 10 == 1:
                bar.set_postfix(_c, refresh=False)

    try:
        summary = run_recipe(recipe, source, reporters, pm, run, limit=args.limit, resume=args.resume,
                             on_frame=on_frame)
    finally:
        if bar is not None:
            bar.close()
    c = summary.counts
    ms = 1e3 * summary.seconds / summary.frames if summary.frames else 0.0
    skipped = f", {summary.skipped} already stored" if summary.skipped else ""
    print(f"{summary.frames} frames: {c['pass']} pass, {c['review']} review, {c['fail']} fail, "
          f"{c['error']} error{skipped} in {summary.seconds:.2f} s ({ms:.2f} ms/frame); "
          f"run {summary.run_id}, recipe {recipe.hash[:16]}")
    print("reports: " + ", ".join(specs))
    for name, (n, first) in summary.reporter_errors.items():  # the other reporters kept every frame
        print(f"loupe: error: {name} failed on {n} frame(s); first: {first}", file=sys.stderr)
    if summary.interrupted:
        print("stopped by the operator; the results above are stored", file=sys.stderr)
        return 130
    return 2 if summary.reporter_errors else 0


def _executor_entry(pm, args):
    """``--executor NAME[:ADDRESS]`` and ``--workers N`` checked: (name, address or None, catalogue entry)."""
    name, _, address = args.executor.partition(":")
    entry = pm.catalogue.executors.get(name.strip().lower())
    if entry is None:
        raise UsageError(f"--executor {args.executor!r}: unknown executor {name!r}; installed: "
                         f"{', '.join(sorted(pm.catalogue.executors)) or 'none (install loupe-ray)'}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be at least 1")
    return name, address.strip() or None, entry


def _run_on_executor(pm, args, recipe, source, source_arg, source_base, reporters, run, specs) -> int:
    from .core.contracts import ExecutorJob

    name, address, entry = _executor_entry(pm, args)
    source.close()  # opened above only to validate the spec; the executor reads the frames itself
    options = source_options(args.source_opt)
    if isinstance(source_arg, SourceDoc):
        options = {**(source_arg.model_extra or {}), **options}
        source_arg = source_arg.spec
    job = ExecutorJob(recipe, source_arg, options, source_base, reporters, run, limit=args.limit,
                      resume=args.resume, quiet=args.quiet, engine=args.engine)
    summary = entry.cls(address=address, workers=args.workers).run(job, pm)
    c = summary.counts
    ms = 1e3 * summary.seconds / summary.frames if summary.frames else 0.0
    skipped = f", {summary.skipped} already stored" if summary.skipped else ""
    print(f"{summary.frames} frames: {c['pass']} pass, {c['review']} review, {c['fail']} fail, "
          f"{c['error']} error{skipped} in {summary.seconds:.2f} s ({ms:.2f} ms/frame); "
          f"run {summary.run_id}, recipe {recipe.hash[:16]}, executor {name}")
    print("reports: " + ", ".join(specs))
    if summary.interrupted:
        print("stopped by the operator; the results above are stored", file=sys.stderr)
        return 130
    return 0


def cmd_train(pm, args) -> int:
    entry = pm.catalogue.trainers[args.task]
    params = model_from_args(entry.cls.Params, args)
    data = Path(args.data)
    if not data.is_dir():
        raise UsageError(f"{data}: data folder not found")
    out = check_out_path(args.out)  # never delete what is at --out unless it is a bundle
    progress = CliProgress(quiet=args.quiet)
    try:
        bundle = entry.cls().train(data, out, params, progress)
    finally:
        progress.close()
    metrics = bundle.meta.get("metrics", {})
    print(f"trained {args.task} model -> {bundle.path}")
    print(f"sha256 {bundle.sha256}")
    if metrics:
        print("metrics: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in metrics.items() if not isinstance(v, (dict, list))))
    return 0


def _runtime_for(pm, bundle: Bundle):
    entry = pm.catalogue.runtimes.get(bundle.task)
    if entry is None:
        raise UsageError(f"{bundle.path}: no installed runtime opens {bundle.task!r} bundles "
                         f"(installed: {', '.join(sorted(pm.catalogue.runtimes)) or 'none'})")
    return entry.cls()


def cmd_eval(pm, args) -> int:
    bundle = Bundle.load(args.bundle)
    data = Path(args.data)
    if not data.is_dir():
        raise UsageError(f"{data}: data folder not found")
    runtime = _runtime_for(pm, bundle)
    executor = _eval_executor(pm, args, bundle, runtime) if getattr(args, "executor", None) else None
    progress = CliProgress(quiet=args.json or args.quiet)
    try:
        if executor is not None:
            result = _eval_on_executor(executor, runtime, bundle, data, args.engine, progress)
        else:
            result = runtime.evaluate(bundle, data, Path(args.out) if args.out else None, progress)
    finally:
        progress.close()
    if args.json:
        print(json.dumps(result, default=json_default))
    else:
        for k, v in result.items():
            if isinstance(v, float):
                print(f"{k:>20}: {v:.4f}")
            elif isinstance(v, (list, dict)):
                print(f"{k:>20}: {json.dumps(v, default=json_default)}")
            else:
                print(f"{k:>20}: {v}")
    return 0


def _eval_executor(pm, args, bundle: Bundle, runtime):
    """``loupe eval --executor NAME[:ADDRESS]``: the executor, after the checks that need no engine."""
    name, address, entry = _executor_entry(pm, args)
    if args.out:
        raise UsageError(f"--out with --executor {name}: the report's pictures need the images on the driver; "
                         f"evaluate without --executor for them")
    from .core.contracts import ModelRuntime

    if type(runtime).eval_plan is ModelRuntime.eval_plan:
        raise UsageError(f"{bundle.path}: {bundle.task!r} bundles cannot be evaluated with --executor {name}: "
                         f"the {bundle.task} runtime does not split its evaluation; evaluate without --executor")
    return entry.cls(address=address, workers=args.workers)


def _eval_on_executor(executor, runtime, bundle: Bundle, data: Path, engine: str | None, progress) -> dict:
    """Predictions on the executor's workers, the metrics here, by the same code as a local evaluation."""
    plan = runtime.eval_plan(bundle, data)
    if plan is None:
        raise UsageError(f"{bundle.path}: the {bundle.task} runtime cannot split this evaluation; "
                         f"evaluate without --executor")
    rows = executor.predict_all(bundle.task, bundle.path, plan.items, progress, engine=engine)
    return runtime.eval_metrics(bundle, data, plan, rows)


def cmd_optimize(pm, args) -> int:
    entry = pm.catalogue.optimizers[args.method]
    bundle = Bundle.load(args.bundle)
    params = model_from_args(entry.cls.Params, args)
    target = check_out_path(args.out)  # never delete what is at --out unless it is a bundle
    progress = CliProgress(quiet=args.quiet)
    try:
        out = entry.cls().optimize(bundle, target, params, progress)
    finally:
        progress.close()
    print(f"{args.method}: {bundle.path} -> {out.path}")
    print(f"sha256 {out.sha256}")
    for k, v in out.meta.get("optimization", {}).items():
        print(f"  {k}: {v}")
    return 0


# ------------------------------------------------------------------- parser


def build_parser(pm, optimize_method: str | None = None) -> argparse.ArgumentParser:
    cat = pm.catalogue
    p = argparse.ArgumentParser(prog="loupe", description="Loupe machine-vision inspection host")
    p.add_argument("--version", action="version", version=f"loupe-host {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("plugins", help="installed plugins, versions, hooks, load errors")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("tools", help="the catalogue of tools, sources, reporters, trainers")
    s.add_argument("id", nargs="?", metavar="ID", help="one tool: its parameters, measurements, an example step")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("validate", help="validate a recipe against the catalogue")
    s.add_argument("recipe")

    s = sub.add_parser("run", help="run a recipe over a source")
    s.add_argument("recipe")
    s.add_argument("--source", help="folder:PATH, video:PATH or camera:INDEX (default: the recipe's)")
    s.add_argument("--source-opt", action="append", metavar="KEY=VALUE",
                   help="a source option, e.g. watch=true, pattern=*.png, recursive=true (repeatable; "
                        "`loupe tools --json` lists each source's options)")
    s.add_argument("--report", action="append", metavar="SPEC",
                   help=f"jsonl:PATH, csv:PATH, sqlite:PATH or html:DIR; repeatable "
                        f"(default: the recipe's, else {DEFAULT_REPORT})")
    s.add_argument("--limit", type=int, metavar="N", help="stop after N frames")
    s.add_argument("--engine", choices=ENGINE_CHOICES, help="inference engine for the recipe's models "
                   "(default: the recipe's engine:, else LOUPE_ENGINE, else cpu)")
    s.add_argument("--resume", action="store_true",
                   help="skip frames already stored by an interrupted run of this recipe and source")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.add_argument("--allow-report-outside", action="store_true",
                   help="let the recipe's report targets lie outside its folder and the working directory")
    s.add_argument("--executor", metavar="NAME[:ADDRESS]",
                   help="run on an executor plugin, e.g. ray (a local Ray instance) or ray:HOST:6379 (a cluster)")
    s.add_argument("--workers", type=int, metavar="N", help="with --executor: worker processes (default: the CPUs)")

    s = sub.add_parser("train", help="train a model into a bundle")
    tsub = s.add_subparsers(dest="task", metavar="TASK")
    tsub.required = True
    for task, entry in sorted(cat.trainers.items()):
        t = tsub.add_parser(task, help=(entry.cls.description or f"train a {task} model").replace("%", "%%"))
        t.add_argument("data", metavar="DATA")
        t.add_argument("--out", required=True, metavar="BUNDLE")
        t.add_argument("-q", "--quiet", action="store_true")
        add_model_options(t, entry.cls.Params)

    s = sub.add_parser("eval", help="score a bundle on the test split of DATA")
    s.add_argument("bundle")
    s.add_argument("data")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--out", metavar="DIR", help="write plots, heatmaps and an HTML summary here")
    s.add_argument("--engine", choices=ENGINE_CHOICES, help="inference engine (default: LOUPE_ENGINE, else cpu)")
    s.add_argument("--batch", type=int, metavar="N", help="images per graph run (default: the task's measured "
                                                          "best on the CPU: classify 8, others 1)")
    s.add_argument("-q", "--quiet", action="store_true")
    s.add_argument("--executor", metavar="NAME[:ADDRESS]",
                   help="predict on an executor plugin's workers, e.g. ray or ray:HOST:6379; metrics are computed here")
    s.add_argument("--workers", type=int, metavar="N", help="with --executor: worker processes (default: the CPUs)")

    s = sub.add_parser("optimize", help="make a bundle smaller or faster")
    s.add_argument("bundle")
    methods = "; ".join(f"{k}: {e.cls.description}" for k, e in sorted(cat.optimizers.items()))
    s.add_argument("--method", required=True, choices=sorted(cat.optimizers) or None, help=methods.replace("%", "%%"))
    s.add_argument("--out", required=True, metavar="BUNDLE2")
    s.add_argument("-q", "--quiet", action="store_true")
    if optimize_method in cat.optimizers:  # that method's own options (see _method_of)
        add_model_options(s, cat.optimizers[optimize_method].cls.Params)

    for name, entry in sorted(cat.commands.items()):
        if name in sub.choices:  # a core command's name: the plugin that took it fails alone
            pm.mark_failed(entry.plugin, f"command {name!r} is one of the host's own commands")
            continue
        cmd = entry.cls()
        c = sub.add_parser(name, help=cmd.help)
        cmd.add_arguments(c)
        c.set_defaults(_plugin_command=cmd)
    return p


COMMANDS = {"plugins": cmd_plugins, "tools": cmd_tools, "validate": cmd_validate, "run": cmd_run,
            "train": cmd_train, "eval": cmd_eval, "optimize": cmd_optimize}


def _method_of(argv: list[str]) -> str | None:
    """The ``--method`` of an ``optimize`` command line, so its options can be added before parsing."""
    if argv[:1] != ["optimize"]:
        return None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method")
    return pre.parse_known_args(argv[1:])[0].method


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if ("-v" in argv or "--verbose" in argv) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        pm = create_plugin_manager()
        parser = build_parser(pm, optimize_method=_method_of(argv))
        if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS \
                and argv[0] not in pm.catalogue.commands:
            raise UsageError(f"unknown command {argv[0]!r}; commands: "
                             f"{', '.join(sorted(set(COMMANDS) | set(pm.catalogue.commands)))}. Plugins add "
                             f"commands (`dataset` comes with loupe-trainer, `gui` with loupe-gui); "
                             f"`loupe plugins` lists what is installed")
        if argv[:1] == ["train"] and len(argv) > 1 and not argv[1].startswith("-") \
                and argv[1] not in pm.catalogue.trainers:
            raise UsageError(f"no trainer for task {argv[1]!r}; installed: "
                             f"{', '.join(sorted(pm.catalogue.trainers)) or 'none (install loupe-trainer)'}")
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command == "eval":
            set_eval_batch(args.batch)  # batched evaluation; the line path stays at batch 1
        engines = getattr(args, "engine", None)  # --engine of run, eval (one) and bench (one or several)
        if isinstance(engines, str):
            set_engine_override(engines)
        elif engines and len(engines) == 1:
            set_engine_override(engines[0])
        handler = getattr(args, "_plugin_command", None)
        if handler is not None:
            args.plugin_manager = pm  # the host's own commands (bench, demo, bundle) work on it
            return int(handler.run(args) or 0)
        return COMMANDS[args.command](pm, args)
    except LoupeError as exc:
        print(f"loupe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loupe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        import pluggy

        if isinstance(exc, pluggy.PluginValidationError):
            print(f"loupe: error: plugin {exc.plugin!r} is invalid: {exc}", file=sys.stderr)
            return 2
        import traceback

        traceback.print_exc()
        print(f"loupe: unexpected failure: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
