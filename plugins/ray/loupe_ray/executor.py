"""``loupe run RECIPE --executor ray[:ADDRESS] [--workers N]``: a recipe over an archive, on Ray Data.

How a run goes:

1. **Listing (driver).** The source (``folder:``, ``archive:`` or ``manifest:``) is asked for
   paths only, one at a time; paths already stored (``--resume``) are skipped and ``--limit``
   is applied. The rows (sequence number, frame index, path) go to a *spool* file on disk,
   never into a list: memory stays bounded by one directory listing or one manifest batch.
2. **Blocks.** The spool is cut into blocks of up to ``block_frames`` frames; the driver keeps
   only each block's (first sequence number, byte offset, frame count).
3. **Workers (Ray Data actors).** ``map_batches`` with an actor class and ``concurrency=N``:
   each actor loads the plugins, rebuilds the recipe (checked by its hash) and builds its
   ``host.Pipeline`` once. For each block it reads its rows from the spool, decodes the images
   from their paths (images never pass through the driver), runs ``Pipeline.process`` and
   returns the ``FrameResult`` without the image (pickled; lazy overlays are materialised).
4. **Results (driver).** ``iter_batches`` streams results back as they are produced; each
   frame goes to every reporter (SQLite, PostgreSQL, JSONL, Parquet...), the event hooks are
   broadcast, and a tqdm bar shows the rate and an ETA.
5. **Faults.** Actors run with ``max_restarts=10`` and ``max_task_retries=1``: a worker
   process that dies is replaced and its block is retried once. A block that fails again is
   dropped by Ray Data (``max_errored_blocks``), and the driver records each of its frames as
   an ``error`` frame naming the reason; so is every frame not done when the run itself fails
   (a worker that cannot start or dies over and over). A bitmap of sequence numbers makes sure
   that no frame is written twice and that none is missing.

With no ADDRESS a local Ray instance is started (no dashboard, a small object store); with
ADDRESS (``ray:HOST:6379`` or ``ray:auto``) the run joins that cluster: the image paths, the
recipe's model files and the spool folder (``LOUPE_RAY_SPOOL``, default a temporary folder)
must then be on storage every node sees.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from host import (ERROR, FAIL, PASS, REVIEW, Executor, ExecutorJob, ExecutorSummary, FrameResult, LazyShapes,
                  LoupeError, UsageError)

from .sources import ArchiveParams, ArchiveSource, ManifestSource, walk_files, split_pattern

log = logging.getLogger("loupe.ray")

LOST = ("lost: the worker running this frame's block died or failed twice (retried once on a new worker); "
        "see the Ray logs")


# ------------------------------------------------------------------ listing


def _listing(job: ExecutorJob, catalogue) -> tuple[str, Iterator[tuple[int, str, Any]]]:
    """(source name as the local source writes it, iterator of (index, path, label))."""
    spec = job.source_spec
    scheme, _, target = spec.partition(":")
    scheme = scheme.strip().lower()
    from pydantic import ValidationError

    from host import StepContext

    ctx = StepContext(step="source", base_dir=job.source_base)
    try:
        if scheme in ("archive", "manifest"):
            cls = ArchiveSource if scheme == "archive" else ManifestSource
            src = cls(cls.Params.model_validate({"target": target, **job.source_options}), ctx)
            return src.name, src.iter_paths()
        if scheme == "folder":
            # the local folder source's file order and keys, without its in-memory listing
            opts = dict(job.source_options)
            if opts.pop("watch", False):
                raise UsageError(f"source {spec!r}: watch mode (a hot folder) cannot run on --executor ray; "
                                 f"it needs a finite list of files")
            stop_file = opts.pop("stop_file", None)
            for k in ("settle_s", "poll_s", "idle_timeout_s", "existing", "retry_s"):
                opts.pop(k, None)
            opts.setdefault("recursive", False)
            params = ArchiveParams.model_validate({"target": target, **opts})
            tgt, pattern = split_pattern(params.target, params.pattern)
            root = ctx.resolve(tgt)
            if not root.exists():
                raise UsageError(f"source folder:{target}: folder not found ({root})")
            rows = ((i, p, None) for i, p in enumerate(walk_files(root, pattern, params.recursive, stop_file)))
            return f"folder:{target}", rows
    except ValidationError as exc:
        raise UsageError("; ".join(f"source {spec!r}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                                   for e in exc.errors())) from None
    raise UsageError(f"source {spec!r}: the ray executor reads image files by path; use folder:, archive: "
                     f"or manifest: (installed sources: {', '.join(sorted(catalogue.sources))})")


# ------------------------------------------------------------------ the worker


class LoupeWorker:
    """A Ray Data actor: builds the recipe's pipeline once, then runs blocks of frames."""

    def __init__(self, recipe: dict, base_dir: str, file: str, recipe_hash: str, spool: str, source: str,
                 engine: str | None = None):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from host import Pipeline, Recipe, create_plugin_manager, set_engine_override

        if engine:  # the driver's --engine, as a local run would use it
            set_engine_override(engine)
        pm = create_plugin_manager()
        self.recipe = Recipe.from_dict(recipe, pm.catalogue, base_dir=Path(base_dir), file=file)
        if self.recipe.hash != recipe_hash:
            raise RuntimeError(f"{file}: the worker built recipe {self.recipe.hash[:16]}, the driver "
                               f"{recipe_hash[:16]}: the worker's plugins differ from the driver's")
        self.pipeline = Pipeline(self.recipe)
        self.spool = spool
        self.source = source

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .sources import read_frame

        seqs: list[int] = []
        blobs: list[bytes] = []
        with open(self.spool, "rb") as f:
            for first, offset, n in zip(batch["seq"], batch["offset"], batch["n"]):
                f.seek(int(offset))
                for k in range(int(n)):
                    index, path = json.loads(f.readline())
                    result = self.pipeline.process(read_frame(index, path, self.source))
                    result.image = None  # results travel without images
                    for t in result.results:
                        if isinstance(t.overlays, LazyShapes):
                            t.overlays = list(t.overlays)
                    seqs.append(int(first) + k)
                    blobs.append(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        out = np.empty(len(blobs), dtype=object)
        out[:] = blobs
        return {"seq": np.asarray(seqs, dtype=np.int64), "result": out}


# ------------------------------------------------------------------ driver


def init_ray(address: str | None, workers: int | None) -> None:
    """Join ``address`` or start a lean local instance; reuses one already started in this process."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    for name in ("ray", "ray.data"):  # Ray's start-up and per-dataset INFO lines would cover the bar
        logging.getLogger(name).setLevel(logging.WARNING)
    kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                              ignore_reinit_error=True)
    if address:
        ray.init(address=address, **kw)
    else:
        cpus = workers or os.cpu_count() or 1
        # one CPU slot per worker actor, plus one for Ray Data's own small tasks
        ray.init(num_cpus=cpus + 1, object_store_memory=200 * 1024 * 1024, **kw)


class RayExecutor(Executor):
    """Ray Data: one actor per worker builds the recipe once; images are read in the workers."""

    name = "ray"
    description = ("Ray Data actors (a local instance, or a cluster at ray:ADDRESS) run the recipe over "
                   "folder:/archive:/manifest: sources; results stream back to the usual reporters")
    block_frames = 64  # at most this many frames per Ray task (the unit of retry and of load balancing)
    max_restarts = 10  # per worker: one that keeps dying (a broken node, a model that cannot load) ends the run

    def predict_all(self, task: str, bundle: Path, items: list, progress, engine: str | None = None) -> list:
        """``loupe eval BUNDLE DATA --executor ray``: predictions on the actors, rows back in order."""
        return predict_all(self, task, bundle, items, progress, engine)

    def run(self, job: ExecutorJob, pm: Any) -> ExecutorSummary:
        summary = ExecutorSummary(job.run.run_id, {PASS: 0, REVIEW: 0, FAIL: 0, ERROR: 0})
        hook = pm.hook
        source_name, rows = _listing(job, pm.catalogue)
        opened = []
        t_start = time.perf_counter()
        spool_dir = Path(tempfile.mkdtemp(prefix="loupe-ray-", dir=os.environ.get("LOUPE_RAY_SPOOL") or None))
        stop = threading.Event()
        old_handlers: dict[int, Any] = {}
        try:
            for r in job.reporters:
                r.open()
                opened.append(r)
            done = None
            if job.resume:
                for r in job.reporters:
                    keys = r.done_keys()
                    if keys is not None:
                        done = keys if done is None else done & keys
                if done is None:
                    raise UsageError("--resume needs a reporter that stores results (sqlite:PATH, parquet:DIR)")
            spool = spool_dir / "frames.jsonl"
            total, blocks = self._spool(rows, spool, done, job.limit, summary)
            summary.run_id = job.run.run_id  # a results store may adopt an interrupted run's id on resume
            if threading.current_thread() is threading.main_thread():
                def handle(signum, frame):
                    if stop.is_set() and signum == signal.SIGINT:
                        raise KeyboardInterrupt
                    stop.set()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    old_handlers[sig] = signal.signal(sig, handle)
            hook.loupe_before_run(run=job.run)
            if total:
                self._execute(job, pm, spool, source_name, total, blocks, opened, summary, stop)
            summary.interrupted = stop.is_set()
        finally:
            for sig, old in old_handlers.items():
                signal.signal(sig, old)
            summary.seconds = time.perf_counter() - t_start
            shutil.rmtree(spool_dir, ignore_errors=True)
            errors = []
            for r in opened:
                try:
                    r.close()
                except Exception as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
        hook.loupe_after_run(run=job.run, counts=dict(summary.counts), interrupted=summary.interrupted)
        return summary

    def _spool(self, rows, spool: Path, done: set[str] | None, limit: int | None,
               summary: ExecutorSummary) -> tuple[int, list[tuple[int, int, int]]]:
        """Write the frames to run to ``spool``; return their count and the blocks (seq, offset, n)."""
        blocks: list[tuple[int, int, int]] = []
        seq = 0
        size = self.block_frames
        with open(spool, "wb") as f:
            for index, path, _label in rows:
                if done is not None and path in done:
                    summary.skipped += 1
                    continue
                if limit is not None and seq >= limit:
                    break
                if seq % size == 0:
                    blocks.append((seq, f.tell(), 0))
                f.write(json.dumps([index, path]).encode() + b"\n")
                seq += 1
        if blocks:
            first, off, _ = blocks[-1]
            blocks[-1] = (first, off, seq - first)
            blocks[:-1] = [(s, o, size) for s, o, _ in blocks[:-1]]
        return seq, blocks

    def _execute(self, job, pm, spool: Path, source_name: str, total: int, blocks, reporters, summary, stop):
        import pyarrow as pa
        import ray

        workers = self.workers
        init_ray(self.address, workers)
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
        ctx = ray.data.DataContext.get_current()
        ctx.max_errored_blocks = -1  # a block that failed twice is recorded frame by frame, not fatal
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        # blocks small enough that every worker gets several
        per = max(1, min(self.block_frames, -(-total // (workers * 4))))
        if per < self.block_frames:
            blocks = [(s, o, n) for s, o, n in _resplit(spool, blocks, per)]
        ds = ray.data.from_arrow([pa.table({"seq": [s], "offset": [o], "n": [n]}) for s, o, n in blocks])
        recipe = job.recipe
        with warnings.catch_warnings():  # max_restarts/max_task_retries as keywords: deprecated from Ray 2.64
            warnings.simplefilter("ignore")
            ds = ds.map_batches(
                LoupeWorker, batch_size=None, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                fn_constructor_kwargs=dict(recipe=recipe.to_dict(), base_dir=str(recipe.base_dir),
                                           file=recipe.file, recipe_hash=recipe.hash, spool=str(spool),
                                           source=source_name, engine=job.engine),
                max_restarts=self.max_restarts, max_task_retries=1)
        seen = np.zeros(total, dtype=bool)
        bar = None
        if not job.quiet:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=f"{recipe.name} (ray, {workers} workers)", unit="img", dynamic_ncols=True,
                       file=sys.stderr, disable=None)
        after_frame = pm.hook.loupe_after_frame if pm.hook.loupe_after_frame.get_hookimpls() else None
        counts = summary.counts
        run = job.run
        written = 0

        def emit(result: FrameResult) -> None:
            for r in reporters:
                r.write(result)
            counts[result.verdict] += 1
            if after_frame is not None:
                after_frame(run=run, result=result)

        reason = LOST
        try:
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
                    for seq, blob in zip(batch["seq"], batch["result"]):
                        if seen[seq]:
                            continue  # a block re-run after a worker died: its frames are written once
                        seen[seq] = True
                        emit(pickle.loads(blob))
                        written += 1
                    if bar is not None:
                        bar.update(len(batch["seq"]))
                        bar.set_postfix(counts, refresh=False)
                    if stop.is_set():
                        return
            except Exception as exc:  # the engine gave up (workers that cannot start or keep dying)
                msg = " ".join(str(exc).split())[:300]
                log.error("Ray run failed after %d of %d frames: %s: %s", written, total, type(exc).__name__, msg)
                reason = f"lost: the Ray run failed before this frame was done: {type(exc).__name__}: {msg}"
            if written < total:  # blocks that failed twice (or a failed run): their frames become error frames
                with open(spool, "rb") as f:
                    for seq, line in enumerate(f):
                        if not seen[seq]:
                            index, path = json.loads(line)
                            emit(FrameResult(path, index, source_name, path, time.time(), ERROR, [], {},
                                             recipe.hash, reason, None))
                            if bar is not None:
                                bar.update(1)
        finally:
            if bar is not None:
                bar.close()


# ------------------------------------------------------------------ loupe eval --executor ray


class EvalWorker:
    """A Ray Data actor for ``loupe eval``: opens the task runtime's predictor on the bundle once, then maps
    blocks of test items (each naming its image by path) to rows; the images are read here."""

    def __init__(self, task: str, bundle: str, engine: str | None):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("LOUPE_ORT_THREADS", "1")  # one CPU slot per actor
        from host import Bundle, create_plugin_manager, set_engine_override

        if engine:
            set_engine_override(engine)
        pm = create_plugin_manager()
        entry = pm.catalogue.runtimes.get(task)
        if entry is None:
            raise RuntimeError(f"{bundle}: no runtime for {task!r} bundles on this worker; install its plugin")
        self.predict = entry.cls().eval_predictor(Bundle.load(bundle))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        blobs = []
        for blob in batch["items"]:
            blobs.append(pickle.dumps([self.predict(item) for item in pickle.loads(blob)],
                                      protocol=pickle.HIGHEST_PROTOCOL))
        out = np.empty(len(blobs), dtype=object)
        out[:] = blobs
        return {"seq": np.asarray(batch["seq"], dtype=np.int64), "rows": out}


def predict_all(executor: "RayExecutor", task: str, bundle: Path, items: list, progress,
                engine: str | None = None) -> list:
    import pyarrow as pa
    import ray

    total = len(items)
    if not total:
        return []
    workers = executor.workers
    init_ray(executor.address, workers)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    per = max(1, min(executor.block_frames, -(-total // (workers * 4))))
    starts = range(0, total, per)
    ds = ray.data.from_arrow([pa.table({"seq": [s], "items": [pickle.dumps(items[s:s + per])]}) for s in starts])
    with warnings.catch_warnings():  # as in run: max_restarts/max_task_retries as keywords
        warnings.simplefilter("ignore")
        ds = ds.map_batches(EvalWorker, batch_size=None, compute=ray.data.ActorPoolStrategy(size=workers),
                            num_cpus=1, fn_constructor_kwargs=dict(task=task, bundle=str(Path(bundle).resolve()),
                                                                   engine=engine),
                            max_restarts=executor.max_restarts, max_task_retries=1)
    rows: list = [None] * total
    done = 0
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            for seq, blob in zip(batch["seq"], batch["rows"]):
                got = pickle.loads(blob)
                if rows[int(seq)] is None:
                    done += len(got)
                rows[int(seq):int(seq) + len(got)] = got
            progress.update("eval", done, total)
    except LoupeError:
        raise
    except Exception as exc:  # a worker that cannot open the bundle, a block that failed twice
        msg = " ".join(str(exc).split())[:400]
        raise LoupeError(f"{bundle}: the Ray evaluation failed after {done} of {total} images: "
                         f"{type(exc).__name__}: {msg}") from None
    missing = sum(r is None for r in rows)
    if missing:  # Ray Data's default max_errored_blocks = 0 makes a lost block fail the run; a safety net
        raise LoupeError(f"{bundle}: {missing} of {total} test images got no prediction from the Ray workers")
    return rows


def _resplit(spool: Path, blocks, per: int) -> Iterator[tuple[int, int, int]]:
    """Cut blocks into smaller ones of ``per`` frames (small runs: every worker gets work)."""
    with open(spool, "rb") as f:
        for first, offset, n in blocks:
            f.seek(offset)
            for k in range(0, n, per):
                off = f.tell()
                m = min(per, n - k)
                for _ in range(m):
                    f.readline()
                yield first + k, off, m
