"""Prometheus metrics of a station (``/metrics``), with prometheus-client.

Counters and gauges are read from the station's status when Prometheus scrapes, so
they equal what the station counted (nothing is double-booked by the screen); step
latencies are histograms fed from the results the screen heard.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_STATES = ("Initialized", "Ready", "SingleExecution", "ContinuousExecution", "Error")


class _StationCollector:
    def __init__(self, control):
        self.control = control

    def collect(self):
        st = self.control.status()
        frames = CounterMetricFamily("loupe_frames", "Results issued by the station, by verdict", labels=["verdict"])
        for verdict, n in st["counts"].items():
            frames.add_metric([verdict], n)
        yield frames
        yield CounterMetricFamily("loupe_missed_triggers", "Triggers the station could not take", value=st["missed"])
        yield CounterMetricFamily("loupe_buffer_overruns", "Triggers missed because the result buffer was full",
                                  value=st["overruns"])
        yield CounterMetricFamily("loupe_results_issued", "Result ids issued", value=st["results_issued"])
        buf = GaugeMetricFamily("loupe_queue_depth", "Depth of the station's queues", labels=["queue"])
        buf.add_metric(["result_buffer"], st["buffer"]["used"])
        buf.add_metric(["pending_triggers"], st["buffer"]["pending"])
        for name, a in st["adapters"].items():
            buf.add_metric([f"events:{name}"], a.get("events_queued", 0))
        yield buf
        yield GaugeMetricFamily("loupe_result_buffer_size", "Capacity of the result buffer",
                                value=st["buffer"]["size"])
        conn = GaugeMetricFamily("loupe_adapter_connected", "1 when the line adapter's client is connected",
                                 labels=["adapter"])
        dropped = CounterMetricFamily("loupe_adapter_events_dropped", "Events an adapter's full queue dropped",
                                      labels=["adapter"])
        for name, a in st["adapters"].items():
            conn.add_metric([name], 1.0 if a.get("connected") else 0.0)
            dropped.add_metric([name], a.get("events_dropped", 0))
        yield conn
        yield dropped
        state = GaugeMetricFamily("loupe_station_state", "1 for the station's current state", labels=["state"])
        for s in _STATES:
            state.add_metric([s], 1.0 if st["state"] == s else 0.0)
        yield state
        yield GaugeMetricFamily("loupe_alarms", "Active alarms", value=len(st["alarms"]))


class _ScreenCollector:
    def __init__(self, hub):
        self.hub = hub

    def collect(self):
        yield CounterMetricFamily("loupe_hmi_records_dropped", "Event records the station dropped because the "
                                  "screen's process fell behind", value=self.hub.records_dropped)


class Metrics:
    def __init__(self, control, hub):
        self.hub = hub
        self.registry = CollectorRegistry()
        self.registry.register(_StationCollector(control))
        self.registry.register(_ScreenCollector(hub))
        self.steps = Histogram("loupe_step_seconds", "Time per inspection step", ["step"], registry=self.registry,
                               buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))

    def render(self) -> tuple[bytes, str]:
        with self.hub.lock:
            pending, self.hub.step_ms[:] = list(self.hub.step_ms), []
        for step, ms in pending:
            self.steps.labels(step).observe(ms / 1e3)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
