"""The run view: a recipe over a source (folder, video, camera) into the chosen reporters."""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any

from PyQt5 import QtCore, QtGui, QtWidgets

from host import Recipe, RecipeError, UsageError, resolved_overlays
from host import SourceDoc, new_run_info, open_reporter, open_source, run_recipe, thumbnail, to_uint8

from . import theme
from .layout import workspace_split
from .imageview import ImageView, to_qimage
from .sourcepick import SourcePicker

VERDICTS = ("pass", "review", "fail", "error")


class RunWorker(QtCore.QThread):
    """Runs ``host.run_recipe`` in a thread.

    ``run_recipe`` calls ``on_frame`` for every frame; the worker keeps the
    counts and the last failures, and the GUI polls ``take_snapshot()`` a few
    times a second, so a fast line never floods the event loop.
    """

    finished_run = QtCore.pyqtSignal(object)   # RunSummary
    failed = QtCore.pyqtSignal(str)

    def __init__(self, pm, recipe: Recipe, source_spec: Any, reports: list[str], limit: int | None,
                 keep_failures: int = 12, fps: float = 20.0, options: dict | None = None, parent=None):
        super().__init__(parent)
        self.options = options or {}
        self.pm, self.recipe, self.source_spec, self.reports, self.limit = pm, recipe, source_spec, reports, limit
        self.keep = keep_failures
        self.period = 1.0 / fps
        self._stop = False
        self.counts = {v: 0 for v in VERDICTS}
        self.failures: collections.deque = collections.deque(maxlen=keep_failures)
        self.total: int | None = None
        self.steps: dict[str, dict] = {}
        self._source = None
        self._lock = threading.Lock()
        self._dirty = False
        self._t0 = time.perf_counter()
        self._latest = None
        self._ms: collections.deque = collections.deque(maxlen=200)
        self.summary = None
        self.error: str | None = None

    def stop(self) -> None:
        """Stop after the current frame. Sources that wait for frames (hot folders, cameras) offer a
        thread-safe ``stop()`` (not yet part of the host's Source contract): call it so they stop waiting."""
        self._stop = True
        src_stop = getattr(self._source, "stop", None)
        if callable(src_stop):
            src_stop()

    def run(self) -> None:
        cat = self.pm.catalogue
        base = self.recipe.base_dir
        try:
            spec = self.source_spec
            source = open_source(spec, cat, base, self.options)
            self._source = source
            if self._stop:
                self.stop()
            try:
                self.total = source.count()
            except Exception:
                self.total = None
            label = spec.spec if isinstance(spec, SourceDoc) else str(spec)
            run = new_run_info(self.recipe, label, self.pm)
            # the operator typed these targets (relative ones resolve in the recipe's folder)
            reporters = [open_reporter(r, cat, run, base, allow_outside=True) for r in self.reports]
            self._t0 = time.perf_counter()
            self.summary = run_recipe(self.recipe, source, reporters, self.pm, run, limit=self.limit,
                                      on_frame=self._on_frame, stop=lambda: self._stop)
            self.finished_run.emit(self.summary)
        except (UsageError, RecipeError) as exc:
            self.error = str(exc)
            self.failed.emit(self.error)
        except Exception as exc:  # shown in the view; the run is over
            self.error = f"{type(exc).__name__}: {exc}"
            self.failed.emit(self.error)

    def _on_frame(self, result) -> None:
        with self._lock:
            self._record(result)

    def _record(self, result) -> None:
        self._dirty = True
        self.counts[result.verdict] = self.counts.get(result.verdict, 0) + 1
        for r in result.results:
            st = self.steps.setdefault(r.step, {"frames": 0, "pass": 0, "review": 0, "fail": 0, "error": 0,
                                                "ms": 0.0})
            st["frames"] += 1
            st[r.verdict] = st.get(r.verdict, 0) + 1
            st["ms"] += r.ms
        self._ms.append(result.total_ms)
        self._latest = result
        if result.verdict in ("fail", "error"):
            thumb = None
            if result.image is not None:
                thumb, _ = thumbnail(to_uint8(result.image), 160)
            reasons = [f"{r.step}: {', '.join(r.failures) or r.error or r.verdict}" for r in result.results
                       if r.verdict != "pass"]
            if result.error:
                reasons.append(result.error)
            self.failures.appendleft({"key": result.key, "path": result.path, "verdict": result.verdict,
                                      "reasons": reasons, "thumb": thumb, "index": result.index})

    def take_snapshot(self) -> dict | None:
        """The state since the last call (None when nothing changed); called by the GUI's timer."""
        with self._lock:
            if not self._dirty:
                return None
            self._dirty = False
            now = time.perf_counter()
            frames = sum(self.counts.values())
            elapsed = max(now - self._t0, 1e-9)
            ms = sorted(self._ms)
            return {"counts": dict(self.counts), "frames": frames, "total": self.total,
                    "fps": frames / elapsed, "elapsed": elapsed,
                    "median_ms": ms[len(ms) // 2] if ms else 0.0,
                    "latest": self._latest, "failures": list(self.failures),
                    "steps": {k: dict(v) for k, v in self.steps.items()}}


class Counter(QtWidgets.QFrame):
    def __init__(self, title: str, status: str, parent=None):
        super().__init__(parent)
        self.setObjectName("counter")
        color = theme.STATUS.get(status, theme.TEXT)
        self.setStyleSheet(f"QFrame#counter {{ background: {theme.PANEL}; border: 1px solid {theme.BORDER};"
                           f" border-left: 4px solid {color}; border-radius: 3px; }}")
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(10, 4, 10, 4)
        lay.setSpacing(0)
        t = QtWidgets.QLabel(title)
        t.setObjectName("muted")
        self.value = QtWidgets.QLabel("0")
        f = self.value.font()
        f.setPointSizeF(f.pointSizeF() * 1.8)
        f.setBold(True)
        self.value.setFont(f)
        self.value.setStyleSheet(f"color: {color};")
        lay.addWidget(t)
        lay.addWidget(self.value)


class RunWorkspace(QtWidgets.QWidget):
    """A recipe over a source into reporters, in a worker thread.

    ``snapshotShown(dict)`` is emitted each time the view shows a new state of the run; ``idle`` once the
    run has ended and its last state, message and buttons are on screen (tests and callers wait on it).
    """

    status = QtCore.pyqtSignal(str)
    runFinished = QtCore.pyqtSignal(object)
    snapshotShown = QtCore.pyqtSignal(dict)
    idle = QtCore.pyqtSignal()

    def __init__(self, pm, parent=None):
        super().__init__(parent)
        self.pm = pm
        self.catalogue = pm.catalogue
        self.recipe: Recipe | None = None
        self.worker: RunWorker | None = None
        self.last_snapshot: dict | None = None
        self._poll = QtCore.QTimer(self)
        self._poll.setInterval(66)
        self._poll.timeout.connect(self._poll_worker)
        self._build_ui()
        self._update_buttons()

    def _build_ui(self):
        split, left, ll = workspace_split(self)
        ll.addWidget(self._build_recipe_box())
        ll.addWidget(self._build_source_box())
        ll.addWidget(self._build_reporters_box())
        ll.addLayout(self._build_run_buttons())
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)
        self.message.setObjectName("muted")
        ll.addWidget(self.message)
        ll.addWidget(self._build_step_table(), 1)
        split.addWidget(left)
        split.addWidget(self._build_live_view())
        split.addWidget(self._build_failures())
        split.setSizes([300, 900, 320])
        split.setStretchFactor(1, 1)

    def _build_recipe_box(self) -> QtWidgets.QGroupBox:
        rbox = QtWidgets.QGroupBox("Recipe")
        rl = QtWidgets.QVBoxLayout(rbox)
        self.recipe_label = QtWidgets.QLabel("no recipe: open one, or edit one in the Recipe workspace")
        self.recipe_label.setWordWrap(True)
        rl.addWidget(self.recipe_label)
        b = QtWidgets.QPushButton("Open recipe…")
        b.clicked.connect(self._open_recipe_dialog)
        rl.addWidget(b)
        return rbox

    def _build_source_box(self) -> QtWidgets.QGroupBox:
        sbox = QtWidgets.QGroupBox("Source")
        sf = QtWidgets.QFormLayout(sbox)
        self.source = SourcePicker(self.catalogue, recipe_entry=True)
        self.scheme, self.target = self.source.scheme, self.source.target
        self.source.changed.connect(self._update_buttons)
        sf.addRow(self.source)
        self.limit = QtWidgets.QSpinBox()
        self.limit.setRange(0, 10_000_000)
        self.limit.setSpecialValueText("all frames")
        sf.addRow("limit", self.limit)
        return sbox

    def _build_reporters_box(self) -> QtWidgets.QGroupBox:
        """One row per registered reporter: a check box and its target."""
        pbox = QtWidgets.QGroupBox("Reporters")
        pl = QtWidgets.QFormLayout(pbox)
        self.report_rows: dict[str, tuple[QtWidgets.QCheckBox, QtWidgets.QLineEdit]] = {}
        defaults = {"sqlite": "loupe-results.sqlite", "jsonl": "results.jsonl", "csv": "results.csv",
                    "html": "report"}
        for s, e in sorted(self.catalogue.reporters.items()):
            chk = QtWidgets.QCheckBox(s)
            chk.setToolTip(e.cls.description)
            edit = QtWidgets.QLineEdit(defaults.get(s, f"results.{s}"))
            pl.addRow(chk, edit)
            self.report_rows[s] = (chk, edit)
        return pbox

    def _build_run_buttons(self) -> QtWidgets.QHBoxLayout:
        btns = QtWidgets.QHBoxLayout()
        self.start_btn = QtWidgets.QPushButton("▶  Start")
        self.start_btn.setObjectName("primary")
        self.start_btn.clicked.connect(self.start)
        self.stop_btn = QtWidgets.QPushButton("■  Stop")
        self.stop_btn.setObjectName("danger")
        self.stop_btn.clicked.connect(self.stop)
        btns.addWidget(self.start_btn, 1)
        btns.addWidget(self.stop_btn, 1)
        return btns

    def _build_step_table(self) -> QtWidgets.QGroupBox:
        stbox = QtWidgets.QGroupBox("Per step")
        stl = QtWidgets.QVBoxLayout(stbox)
        self.step_table = QtWidgets.QTableWidget(0, 5)
        self.step_table.setHorizontalHeaderLabels(["step", "pass", "review", "fail", "mean ms"])
        self.step_table.verticalHeader().hide()
        self.step_table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        hh = self.step_table.horizontalHeader()
        hh.setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        hh.setSectionResizeMode(0, QtWidgets.QHeaderView.Stretch)
        stl.addWidget(self.step_table)
        return stbox

    def _build_headline(self) -> QtWidgets.QHBoxLayout:
        """The run's verdict counts as the headline (the last frame's verdict is a badge on the image)."""
        top = QtWidgets.QHBoxLayout()
        self.headline = QtWidgets.QLabel()
        self.headline.setAlignment(QtCore.Qt.AlignCenter)
        self.headline.setMinimumWidth(210)
        self.headline.setFixedHeight(64)
        self._set_headline({}, 0)
        top.addWidget(self.headline)
        self.counters = {}
        for v, title in (("pass", "PASS"), ("review", "REVIEW"), ("fail", "FAIL"), ("error", "ERROR")):
            c = Counter(title, v)
            self.counters[v] = c
            top.addWidget(c, 1)
        self.rate = Counter("THROUGHPUT", "info")
        self.rate.value.setText("—")
        top.addWidget(self.rate, 1)
        return top

    def _build_live_view(self) -> QtWidgets.QWidget:
        centre = QtWidgets.QWidget()
        cl = QtWidgets.QVBoxLayout(centre)
        cl.setContentsMargins(4, 0, 4, 0)
        cl.addLayout(self._build_headline())
        self.progress = QtWidgets.QProgressBar()
        self.progress.setFormat("%v / %m frames")
        cl.addWidget(self.progress)
        self.view = ImageView()
        self.view.placeholder = "The live image appears here when a run starts."
        self.view.hovered.connect(self.status.emit)
        cl.addWidget(self.view, 1)
        self.frame_info = QtWidgets.QLabel("")
        self.frame_info.setObjectName("muted")
        cl.addWidget(self.frame_info)
        return centre

    def _build_failures(self) -> QtWidgets.QGroupBox:
        right = QtWidgets.QGroupBox("Last failures")
        rl2 = QtWidgets.QVBoxLayout(right)
        self.failures = QtWidgets.QListWidget()
        self.failures.setIconSize(QtCore.QSize(96, 72))
        self.failures.setWordWrap(True)
        self.failures.setSpacing(2)
        rl2.addWidget(self.failures)
        return right

    # ----------------------------------------------------------------- state

    def set_recipe(self, recipe: Recipe | None) -> None:
        if self.worker is not None and self.worker.isRunning():
            return  # a running line keeps its recipe
        self.recipe = recipe
        if recipe is None:
            self.recipe_label.setText("no recipe")
        else:
            src = recipe.doc.source.spec if isinstance(recipe.doc.source, SourceDoc) else recipe.doc.source
            steps = ", ".join(s.name for s in recipe.steps) or "no steps"
            self.recipe_label.setText(f"<b>{recipe.name}</b> — {len(recipe.steps)} steps ({steps})<br>"
                                      f"<span style='color:{theme.MUTED}'>{recipe.file}<br>"
                                      f"source: {src or 'none'} · hash {recipe.hash[:12]}</span>")
            enabled = set(recipe.doc.report)
            for s, (chk, edit) in self.report_rows.items():
                for spec in enabled:
                    if spec.startswith(s + ":"):
                        chk.setChecked(True)
                        edit.setText(spec.split(":", 1)[1])
        self._update_buttons()

    @property
    def source_form(self):
        """The chosen source kind's options form (generated from its Params), or None."""
        return self.source.form

    def source_options(self) -> dict:
        return self.source.options()

    def _open_recipe_dialog(self):
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open recipe", "", "Recipes (*.yaml *.yml)")
        if path:
            try:
                self.set_recipe(Recipe.load(path, self.catalogue))
            except RecipeError as exc:
                self.message.setText(str(exc))

    def source_spec(self):
        spec = self.source.spec()
        if spec is None:
            if self.recipe is None or self.recipe.doc.source is None:
                raise UsageError("the recipe has no source: choose a source kind and target")
            return self.recipe.doc.source
        return spec

    def report_specs(self) -> list[str]:
        out = []
        for s, (chk, edit) in self.report_rows.items():
            if chk.isChecked():
                if not edit.text().strip():
                    raise UsageError(f"reporter {s}: give a path")
                out.append(f"{s}:{edit.text().strip()}")
        return out

    def _update_buttons(self):
        running = self.worker is not None and self.worker.isRunning()
        self.start_btn.setEnabled(self.recipe is not None and not running)
        self.stop_btn.setEnabled(running)

    def _set_headline(self, counts: dict[str, int], frames: int, state: str = "idle") -> None:
        """The headline: how many of the run's frames passed, coloured by the worst verdict so far."""
        self.headline_counts = {v: int(counts.get(v, 0)) for v in VERDICTS}
        worst = next((v for v in ("error", "fail", "review", "pass") if self.headline_counts[v]), None)
        others = " · ".join(f"{self.headline_counts[v]} {v.upper()}" for v in VERDICTS[1:] if self.headline_counts[v])
        if not frames:
            text, sub, color, fg = state.upper(), "", theme.BORDER, theme.MUTED
        else:
            text = f"{self.headline_counts['pass']} / {frames} PASS"
            sub = others or "every frame passed"
            color, fg = theme.STATUS[worst], "#101214"
        #: the headline as plain text, e.g. "4 / 6 PASS — 2 FAIL"
        self.headline_text = f"{text} — {sub}" if sub else text
        self.headline.setText(f"<div style='font-size:18pt; font-weight:bold'>{text}</div>"
                              + (f"<div style='font-size:9pt; font-weight:bold'>{sub}</div>" if sub else ""))
        self.headline.setToolTip("this run's verdict counts (the last frame's verdict is on the image)")
        self.headline.setStyleSheet(f"background: {color}; color: {fg}; border-radius: 4px; padding: 0 10px;")

    # ----------------------------------------------------------------- run

    def start(self) -> bool:
        if self.recipe is None:
            return False
        try:
            spec = self.source_spec()
            options = self.source_options()
            reports = self.report_specs()
        except UsageError as exc:
            self.message.setText(str(exc))
            return False
        self.failures.clear()
        for c in self.counters.values():
            c.value.setText("0")
        self._set_headline({}, 0, "starting")
        self.message.setText("running…  " + (", ".join(reports) if reports else "(no reporters)"))
        self.worker = RunWorker(self.pm, self.recipe, spec, reports, self.limit.value() or None, options=options)
        self._poll.start()
        self.worker.finished_run.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.worker.finished.connect(self._worker_done)
        self.worker.start()
        self._update_buttons()
        return True

    def stop(self):
        if self.worker is not None:
            self.worker.stop()
            self.message.setText("stopping after the current frame…")

    def is_idle(self) -> bool:
        return self.worker is None or (self.worker.isFinished() and not self._poll.isActive())

    def _worker_done(self) -> None:
        # QThread.finished comes after the worker's finished_run / failed (queued in emission order)
        self._poll_worker()
        self._poll.stop()
        self._update_buttons()
        self.idle.emit()

    def _poll_worker(self):
        if self.worker is None:
            return
        snap = self.worker.take_snapshot()
        if snap is not None:
            self._on_snapshot(snap)
        if self.worker.isFinished():
            self._poll.stop()

    def _on_snapshot(self, snap: dict):
        self.last_snapshot = snap
        for v, c in self.counters.items():
            c.value.setText(str(snap["counts"].get(v, 0)))
        self.rate.value.setText(f"{snap['fps']:.1f}/s")
        self.rate.setToolTip(f"median {snap['median_ms']:.2f} ms per frame in the recipe")
        total = snap.get("total")
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(min(snap["frames"], total))
        else:
            self.progress.setRange(0, 0 if self.worker and self.worker.isRunning() else 1)
        res = snap.get("latest")
        self._set_headline(snap["counts"], snap["frames"])
        if res is not None:
            self.view.banner = (f"last frame: {res.verdict.upper()}", res.verdict)
            self.view.set_image(res.image)
            self.view.set_overlays(resolved_overlays(res))  # deferred statuses take the step's verdict colour
            heat = []
            if res.image is not None:
                h, w = res.image.shape[:2]
                heat = [(r.heatmap, r.roi or (0, 0, w, h)) for r in res.results if r.heatmap is not None]
            self.view.set_heatmaps(heat)
            self.frame_info.setText(f"#{res.index}  {res.path or res.key}   {res.total_ms:.2f} ms   "
                                    f"{snap['median_ms']:.2f} ms median")
        self._show_failures(snap["failures"])
        steps = snap.get("steps") or {}
        self.step_table.setRowCount(len(steps))
        for i, (name, st) in enumerate(steps.items()):
            vals = [name, st.get("pass", 0), st.get("review", 0), st.get("fail", 0) + st.get("error", 0),
                    f"{st['ms'] / max(st['frames'], 1):.2f}"]
            for j, v in enumerate(vals):
                it = QtWidgets.QTableWidgetItem(str(v))
                if j == 3 and v:
                    it.setForeground(theme.status_color("fail"))
                self.step_table.setItem(i, j, it)
        self.snapshotShown.emit(snap)

    def _show_failures(self, failures: list[dict]):
        self.failures.clear()
        for f in failures:
            name = Path(f["path"]).name if f["path"] else f["key"]
            it = QtWidgets.QListWidgetItem(f"{f['verdict'].upper()}  #{f['index']} {name}\n" + "\n".join(f["reasons"][:3]))
            it.setForeground(theme.status_color(f["verdict"]))
            if f["thumb"] is not None:
                it.setIcon(QtGui.QIcon(QtGui.QPixmap.fromImage(to_qimage(f["thumb"][..., ::-1]
                                                                         if f["thumb"].ndim == 3 else f["thumb"]))))
            it.setToolTip(f["key"])
            self.failures.addItem(it)

    def _on_finished(self, summary):
        self._poll_worker()
        done = "stopped" if (summary.interrupted or self.worker._stop) else "finished"
        self.message.setText(f"run {summary.run_id} {done}: {summary.frames} frames in {summary.seconds:.1f} s "
                             f"({summary.frames / max(summary.seconds, 1e-9):.1f}/s)")
        self.progress.setRange(0, max(1, self.progress.maximum()))
        self._update_buttons()
        self.runFinished.emit(summary)

    def _on_failed(self, msg: str):
        self._poll_worker()
        self.message.setText(f"<span style='color:{theme.STATUS['fail']}'>{msg}</span>")
        if not (self.last_snapshot or {}).get("frames"):
            self._set_headline({}, 0, "error")
        self._update_buttons()
