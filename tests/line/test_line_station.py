"""The station state machine (OPC 40100-1), its result buffer, ids and events, driven through its control handle."""
from __future__ import annotations

import sqlite3
from pathlib import Path
import threading
import time

import pytest

from host import LineAdapter, StationActionError, hookimpl
from host.core.station import Station, load_station

from line_support import write_station


class Recorder(LineAdapter):
    """A real adapter that records what it hears (optionally slowly)."""

    scheme = "rec"
    queue_size = 1024  # the tests that count events must not lose any (a loaded machine can run ~10 behind)
    instances: list["Recorder"] = []
    delay = 0.0

    def __init__(self, target, params, control):
        super().__init__(target, params, control)
        self.events = []
        self.started = self.closed = False
        Recorder.instances.append(self)

    def start(self):
        self.started = True

    def on_event(self, event):
        time.sleep(self.delay)
        self.events.append(event)

    def close(self):
        self.closed = True


class RecorderPlugin:
    @hookimpl
    def loupe_line_adapter(self, register):
        register(Recorder)


@pytest.fixture
def rec_pm(line_pm):
    Recorder.instances.clear()
    Recorder.delay = 0.0
    Recorder.queue_size = 1024
    line_pm.register_plugin(RecorderPlugin(), name="recorder")
    return line_pm


def start(pm, path, **kw):
    st = Station(load_station(path, pm.catalogue, **kw), pm)
    st.start()
    return st


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def stored(db) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT idx, key, verdict, error FROM frames ORDER BY idx").fetchall()


def test_states_trigger_job_and_acknowledge(rec_pm, station_file):
    st = start(rec_pm, station_file, io=["rec://here"])
    try:
        rec = Recorder.instances[0]
        assert rec.started and st.state == "Ready" and st.job == "four" and st.jobs == ["four", "three"]
        rid = st.trigger()
        assert rid == 1
        r = st.wait_result(rid, timeout=20)
        assert r is not None and r.result_id == 1 and r.job == "four"
        assert r.verdict == "pass" and r.measurements["holes.count"] == 4  # plate-0 has four holes
        assert list(r.measurements)[:1] == ["light.mean"] and set(r.processing_ms) == {"gray", "light", "holes"}
        assert wait_for(lambda: st.state == "Ready")
        assert st.status()["buffer"]["unacknowledged"] == 1
        # a job changes only in Ready; an unknown job is refused with its code
        with pytest.raises(StationActionError) as e:
            st.select_job("nope")
        assert e.value.code == "unknown_job"
        st.select_job("three")
        assert st.job == "three" and st.changeovers_ms
        r2 = st.wait_result(st.trigger(), timeout=20)
        assert r2.job == "three" and r2.verdict == "fail"  # plate-1 has four holes, the job wants three
        assert r2.failures == ["holes: count 4 ≠ 3"]
        st.acknowledge()  # the oldest: result 1
        assert st.result(1).acknowledged and not st.result(2).acknowledged
        st.acknowledge(2)
        st.acknowledge(2)  # twice is harmless
        with pytest.raises(StationActionError) as e:
            st.acknowledge()
        assert e.value.code == "no_result"
        assert wait_for(lambda: len([x for x in rec.events if x.kind == "result_acknowledged"]) == 2)
        kinds = [x.kind for x in rec.events]
        assert kinds[:4] == ["state_changed", "state_changed", "result_ready", "state_changed"]
        # the station is Ready by the time anyone hears of the result (a TCP reply goes out from inside the
        # publish, and a STATE? after it must not say SingleExecution); the change is announced after the result
        assert rec.events[2].state == "Ready"
        assert (rec.events[3].data["previous"], rec.events[3].state) == ("SingleExecution", "Ready")
        assert "job_changed" in kinds
        ready = [x for x in rec.events if x.kind == "result_ready"]
        assert [x.result.result_id for x in ready] == [1, 2]
        assert ready[0].result.frame is None  # adapters that do not draw get no image
        assert st.last_result().frame is not None
        s = st.status()
        assert s["counts"] == {"pass": 1, "review": 0, "fail": 1, "error": 0} and s["results_issued"] == 2
        st.reset_counters()
        assert st.status()["counts"]["fail"] == 0
    finally:
        st.close()
    assert rec.closed
    rows = stored(station_file.parent / "results.sqlite")
    assert [(i, k, v) for i, k, v, _ in rows] == [(1, "1", "pass"), (2, "2", "fail")]
    with sqlite3.connect(station_file.parent / "results.sqlite") as c:
        runs = c.execute("SELECT recipe_name FROM runs ORDER BY started").fetchall()
    assert runs == [("four-holes",), ("three-holes",)]  # one run per job session


def test_buffer_full_counts_missed_and_flags_overrun(rec_pm, tmp_path):
    path = write_station(tmp_path, buffer=2)
    st = start(rec_pm, path, io=["rec://x"])
    try:
        a, b = st.trigger(), st.trigger()
        st.wait_result(b, timeout=20)
        for _ in range(3):  # the PLC never acknowledges
            with pytest.raises(StationActionError) as e:
                st.trigger()
            assert e.value.code == "buffer_full"
        s = st.status()
        assert s["missed"] == 3 and s["overruns"] == 3 and s["overrun"] is True
        assert s["buffer"] == {"size": 2, "used": 2, "pending": 0, "unacknowledged": 2}
        assert wait_for(lambda: st.state == "Ready")
        rec = Recorder.instances[0]
        assert wait_for(lambda: sum(x.kind == "trigger_missed" for x in rec.events) == 3)
        assert [x.data["reason"] for x in rec.events if x.kind == "trigger_missed"] == ["buffer_full"] * 3
        st.acknowledge(a)
        c = st.trigger()  # room again; ids go on with no gap
        assert c == b + 1 and st.wait_result(c, timeout=20) is not None
        st.reset()
        assert st.status()["overrun"] is False and st.status()["missed"] == 3
    finally:
        st.close()
    assert [r[0] for r in stored(tmp_path / "results.sqlite")] == [1, 2, 3]


def test_continuous_mode_and_refusals(rec_pm, tmp_path):
    path = write_station(tmp_path, buffer=3, acknowledge="auto")
    st = start(rec_pm, path, io=["rec://x"])
    try:
        st.start_continuous()
        assert st.state == "ContinuousExecution"
        with pytest.raises(StationActionError) as e:
            st.trigger()
        assert e.value.code == "busy"
        with pytest.raises(StationActionError) as e:
            st.select_job("three")
        assert e.value.code == "busy"
        assert wait_for(lambda: st.status()["results_issued"] >= 10)
        st.stop_continuous()
        assert wait_for(lambda: st.state == "Ready")
        n = st.status()["results_issued"]
        time.sleep(0.3)
        assert st.status()["results_issued"] == n  # stopped
        assert st.status()["buffer"]["used"] == 0  # auto acknowledge
        assert st.status()["missed"] == 1
    finally:
        st.close()
    rows = stored(tmp_path / "results.sqlite")
    assert [r[0] for r in rows] == list(range(1, n + 1))


def test_free_run_waits_for_room_instead_of_dropping(rec_pm, tmp_path):
    path = write_station(tmp_path, buffer=3, trigger="free-run")
    st = start(rec_pm, path, io=["rec://x"])
    try:
        assert st.state == "ContinuousExecution"
        assert wait_for(lambda: st.status()["buffer"]["unacknowledged"] == 3)
        time.sleep(0.2)
        s = st.status()
        assert s["results_issued"] == 3 and s["missed"] == 0  # paced by the acknowledgements
        st.acknowledge()
        assert wait_for(lambda: st.status()["results_issued"] == 4)
    finally:
        st.close()


def test_reload_refuses_a_bad_recipe_and_keeps_the_old(rec_pm, station_file):
    st = start(rec_pm, station_file)
    try:
        before = st.config.recipes["four"].hash
        good = (station_file.parent / "four-holes.yaml").read_text()
        (station_file.parent / "four-holes.yaml").write_text(good.replace("tool: classical.blob",
                                                                          "tool: classical.blobb"))
        with pytest.raises(StationActionError) as e:
            st.reload()
        assert e.value.code == "bad_recipe" and "classical.blobb" in str(e.value) and "four-holes.yaml" in str(e.value)
        r = st.wait_result(st.trigger(), timeout=20)
        assert r.verdict == "pass" and r.frame.recipe_hash == before  # the old pipeline still runs
        (station_file.parent / "four-holes.yaml").write_text(good.replace("min: 4, max: 4", "min: 5, max: 5"))
        st.reload()
        assert st.config.recipes["four"].hash != before
        r = st.wait_result(st.trigger(), timeout=20)
        assert r.verdict == "fail" and r.frame.recipe_hash == st.config.recipes["four"].hash
    finally:
        st.close()


def test_stored_source_frame_is_read_before_its_trigger(rec_pm, tmp_path):
    """A folder is a stored source: the station reads the next image while it waits, so the image a trigger
    inspects was read before the trigger; in order, and the cycle through the folder is unchanged."""
    from loupe_classical.sources import FolderSource, FolderParams, VideoParams, VideoSource

    assert FolderSource(FolderParams(target="x")).stored and VideoSource(VideoParams(target="x.avi")).stored
    assert not FolderSource(FolderParams(target="x", watch=True)).stored  # a hot folder waits for new files
    st = start(rec_pm, write_station(tmp_path, acknowledge="auto"))
    try:
        names = sorted(p.name for p in (tmp_path / "images").iterdir())
        seen = []
        for _ in range(len(names) + 2):
            time.sleep(0.3)  # idle: the next frame is read meanwhile
            r = st.wait_result(st.trigger(), timeout=20)
            assert r.verdict in ("pass", "fail") and r.frame.timestamp < r.created
            seen.append(Path(r.frame.path).name)
        assert seen == names + names[:2]
    finally:
        st.close()


def test_source_failure_enters_error_and_reset_recovers(rec_pm, tmp_path):
    path = write_station(tmp_path)
    # the folder goes before the station starts: a folder is a stored source, whose next frame the station
    # reads ahead, so a folder removed later would fail one listing later
    for f in (tmp_path / "images").iterdir():
        f.unlink()
    (tmp_path / "images").rmdir()
    st = start(rec_pm, path, io=["rec://x"])
    try:
        r = st.wait_result(st.trigger(), timeout=20)
        assert r.verdict == "error" and "source" in r.failures[-1]
        assert wait_for(lambda: st.state == "Error")
        assert "error" in st.status()["alarms"]
        with pytest.raises(StationActionError) as e:
            st.trigger()
        assert e.value.code == "not_ready"
        from line_support import write_images

        write_images(tmp_path / "images")
        st.reset()
        assert st.state == "Ready" and not st.status()["alarms"]
        assert st.wait_result(st.trigger(), timeout=20).verdict == "pass"
        rec = Recorder.instances[0]
        assert wait_for(lambda: any(x.kind == "error" for x in rec.events))
    finally:
        st.close()
    assert [r[0] for r in stored(tmp_path / "results.sqlite")] == [1, 2]  # the error result is stored too


def test_slow_adapter_never_delays_inspection(rec_pm, tmp_path):
    path = write_station(tmp_path, buffer=64, acknowledge="auto")
    Recorder.delay = 0.5  # a stuck client: the queue (8 events) overflows
    Recorder.queue_size = 8
    st = start(rec_pm, path, io=["rec://slow"])
    try:
        t0 = time.perf_counter()
        ids = [st.trigger() for _ in range(30)]
        assert all(st.wait_result(i, timeout=20) for i in ids)
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.5 * 8  # not paced by the adapter's 0.5 s per event
        ad = st.status()["adapters"]["rec://slow"]
        assert ad["events_dropped"] > 0
    finally:
        st.close(timeout=5)


class DirectRecorder(Recorder):
    """A ``direct_events`` adapter: told on the station's thread, it keeps at most ``room`` events."""

    scheme = "direct"
    direct_events = True
    room = 6

    def on_event(self, event):
        if len(self.events) >= self.room:
            return False
        self.events.append((threading.current_thread().name, event))
        return True


class DirectPlugin:
    @hookimpl
    def loupe_line_adapter(self, register):
        register(DirectRecorder)


def test_direct_events_come_in_order_on_the_station_thread_and_count_drops(rec_pm, tmp_path):
    rec_pm.register_plugin(DirectPlugin(), name="direct")
    path = write_station(tmp_path, buffer=64, acknowledge="auto")
    st = start(rec_pm, path, io=["direct://a"])
    try:
        ids = [st.trigger() for _ in range(5)]
        assert all(st.wait_result(i, timeout=20) for i in ids)
        ad = next(a for a in Recorder.instances if isinstance(a, DirectRecorder))
        threads = {name for name, _ in ad.events}
        assert threads and not any(n.startswith("loupe-events-") for n in threads)  # no queue thread
        ready = [e.result.result_id for _, e in ad.events if e.kind == "result_ready"]
        assert ready == sorted(ready) and ready[0] == ids[0]
        assert wait_for(lambda: st.status()["adapters"]["direct://a"]["events_dropped"] > 0)  # room for 6
        assert st.status()["adapters"]["direct://a"]["event_errors"] == 0
    finally:
        st.close(timeout=5)


def test_result_ids_continue_across_restarts(rec_pm, tmp_path):
    path = write_station(tmp_path, acknowledge="auto")
    st = start(rec_pm, path)
    ids = [st.trigger() for _ in range(3)]
    st.wait_result(ids[-1], timeout=20)
    st.close()
    st = start(rec_pm, path)
    try:
        assert st.trigger() == 4  # a clean stop records the exact next id
    finally:
        st.close()
    # a crash before close: the reserved block is skipped, no id reused
    from host.core.station import ResultIds

    ids = ResultIds(tmp_path / "x.json", block=10, lock=False)
    taken = [ids.take() for _ in range(3)]
    again = ResultIds(tmp_path / "x.json", block=10, lock=False)  # no close(): as after kill -9
    assert taken == [1, 2, 3] and again.take() == 11


def test_a_second_station_on_the_same_state_file_is_refused(rec_pm, tmp_path):
    from host import UsageError

    path = write_station(tmp_path)
    st = start(rec_pm, path)
    try:
        with pytest.raises(UsageError, match="another station is running"):
            start(rec_pm, path)
        assert st.wait_result(st.trigger(), timeout=20).result_id == 1
    finally:
        st.close()
    st = start(rec_pm, path)  # the lock went with the first station
    st.close()


def test_close_inspects_the_triggers_already_taken(rec_pm, tmp_path):
    path = write_station(tmp_path, buffer=8)
    st = start(rec_pm, path, io=["rec://x"])
    ids = [st.trigger() for _ in range(6)]
    st.close()
    rows = stored(tmp_path / "results.sqlite")
    assert [r[0] for r in rows] == ids  # every issued id is stored once
    assert all(r[2] in ("pass", "fail") and r[3] is None for r in rows), rows  # inspected, not aborted
    assert Recorder.instances[0].closed


def test_source_trigger_counts_frames_that_find_the_buffer_full(rec_pm, tmp_path):
    # trigger: source — the source paces ContinuousExecution (a camera's hardware trigger; here a
    # folder, as fast as it reads): a frame that arrives with the buffer full is a missed trigger
    path = write_station(tmp_path, buffer=2, trigger="source")
    st = start(rec_pm, path, io=["rec://x"])
    try:
        assert st.state == "ContinuousExecution"
        assert wait_for(lambda: st.status()["missed"] >= 3)
        s = st.status()
        assert s["results_issued"] == 2 and s["overrun"] and s["buffer"]["unacknowledged"] == 2
        st.stop_continuous()
        assert wait_for(lambda: st.state == "Ready")
    finally:
        st.close()
    assert [r[0] for r in stored(tmp_path / "results.sqlite")] == [1, 2]


def test_an_adapter_that_draws_gets_the_frame(rec_pm, station_file):
    class Drawer(Recorder):
        scheme = "draw"
        wants_frames = True

    class DrawerPlugin:
        @hookimpl
        def loupe_line_adapter(self, register):
            register(Drawer)

    rec_pm.register_plugin(DrawerPlugin(), name="drawer")
    st = start(rec_pm, station_file, io=["rec://a", "draw://b"])
    try:
        st.wait_result(st.trigger(), timeout=20)
        plain, drawer = Recorder.instances
        assert wait_for(lambda: any(e.kind == "result_ready" for e in drawer.events)
                        and any(e.kind == "result_ready" for e in plain.events))
        got = next(e for e in drawer.events if e.kind == "result_ready").result
        assert got.frame is not None and got.frame.image.shape == (130, 160)
        assert next(e for e in plain.events if e.kind == "result_ready").result.frame is None
    finally:
        st.close()
