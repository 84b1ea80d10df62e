"""The ``genicam:`` source: a GenICam camera through a GenTL producer (harvesters).

Specs: ``genicam:0`` (device index), ``genicam:serial=S``, ``genicam:model=M`` (the first
camera of that model when there are several).
Options (recipe or station ``source`` mapping): ``cti`` (producer files or folders,
else ``GENICAM_GENTL64_PATH``), ``features`` (written to the camera at open, checked
against its node map), ``acquisition``:

- ``free-run``: the camera streams; every frame is yielded;
- ``software``: each frame is taken with the camera's ``TriggerSoftware`` command,
  sent when the consumer asks for the next frame, so a station's software trigger
  reaches the camera as ``TriggerSoftware``;
- ``hardware``: ``TriggerMode On`` with ``TriggerSource`` (default ``Line0``); the
  source waits for parts, and a fetch timeout is not an error.

A fetch timeout in free-run or software mode yields an ``error`` frame with its
reason. A lost device (any other fetch failure) yields one ``error`` frame with
``meta["device_lost"] = True``, then the camera is reopened with exponential
backoff until it is back (or the source is stopped); the first frame after it has
``meta["device_restored"] = True``. Buffers always go back to the producer: the
frame is copied out inside ``with fetch()`` and yielded after it.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Literal

from pydantic import Field

from host import Frame, Source, SourceParams, UsageError

from .camera import (apply_features, check_feature, device_field, feature_names, find_producers, parse_target,
                     quiet_harvesters)
from .pixels import bit_depth, to_image


class GenICamParams(SourceParams):
    cti: str | list[str] | None = Field(None, description="GenTL producer file(s) or folder(s) "
                                                          "(default: GENICAM_GENTL64_PATH)")
    features: dict[str, Any] = Field(default_factory=dict, description="camera features written at open, e.g. "
                                     "{ExposureTime: 2000, Gain: 3, PixelFormat: Mono8}")
    acquisition: Literal["free-run", "software", "hardware"] = Field(
        "free-run", description="free-run streaming, a TriggerSoftware per frame, or the camera's hardware trigger")
    trigger_source: str = Field("Line0", description="hardware: the camera's TriggerSource")
    timeout_s: float = Field(2.0, gt=0, le=3600, description="fetch timeout per frame")
    buffers: int | None = Field(None, ge=1, le=256, description="GenTL buffers announced to the producer "
                                                               "(default: the producer's minimum, at least 4)")
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames")
    reconnect_s: float = Field(0.5, ge=0.05, le=60, description="first wait before reopening a lost camera "
                                                               "(doubles up to reconnect_max_s)")
    reconnect_max_s: float = Field(10.0, ge=0.05, le=600, description="longest wait between reopen attempts")


class GenICamSource(Source):
    """A GenICam camera (GigE Vision, USB3 Vision, any GenTL producer) through harvesters."""

    scheme = "genicam"
    description = ("GenICam camera through a GenTL producer (genicam:0, genicam:serial=S, genicam:model=M); "
                   "features, free-run / software / hardware trigger")
    Params = GenICamParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._device = parse_target(params.target)
        self._name = f"genicam:{params.target.strip() or '0'}"
        self._stop = threading.Event()
        self._harvester = None
        self._ia = None
        self._format = ""

    # ------------------------------------------------------------ opening

    def _open(self) -> None:
        from harvesters.core import Harvester

        quiet_harvesters()
        p = self.params
        producers = find_producers(p.cti, self.context.base_dir)
        if not producers:
            raise UsageError(f"source {self._name}: no GenTL producer found; set GENICAM_GENTL64_PATH to the "
                             f"folder of your camera vendor's .cti file, or give the source a 'cti' option")
        h = Harvester()
        for f in producers:
            h.add_file(f)
        h.update()
        try:
            self._ia = self._create(h)
        except BaseException:
            h.reset()
            raise
        self._harvester = h
        ia = self._ia
        try:
            apply_features(ia.remote_device.node_map, p.features, where=f"source {self._name}: features")
            self._set_trigger(ia.remote_device.node_map)
            least = ia.min_num_buffers
            if p.buffers is not None and p.buffers < least:
                raise UsageError(f"source {self._name}: buffers: this producer needs at least {least}")
            ia.num_buffers = p.buffers or max(4, least)
            ia.start()
        except BaseException:
            self._release()
            raise

    def _create(self, h):
        devices = h.device_info_list
        if not devices:
            raise UsageError(f"source {self._name}: the GenTL producer(s) found no camera")
        sel = self._device
        if isinstance(sel, int):
            if sel >= len(devices):
                raise UsageError(f"source {self._name}: no device {sel}; {len(devices)} found "
                                 f"(see `loupe cameras`)")
            return h.create(sel)
        match = [i for i, d in enumerate(devices) if all(device_field(d, k) == v for k, v in sel.items())]
        if not match:
            raise UsageError(f"source {self._name}: no camera matches "
                             f"{', '.join(f'{k}={v}' for k, v in sel.items())} (see `loupe cameras`)")
        return h.create(match[0])  # several cameras of one model: the first, in the producers' order

    def _set_trigger(self, nm) -> None:
        mode = self.params.acquisition
        where = f"source {self._name}: acquisition {mode}"
        if mode == "free-run":
            if nm.has_node("TriggerMode"):
                nm.TriggerMode.value = "Off"
            return
        for feature in ("TriggerMode", "TriggerSource") + (("TriggerSoftware",) if mode == "software" else ()):
            if not nm.has_node(feature):
                raise UsageError(f"{where}: the camera has no {feature} feature")
        if nm.has_node("TriggerSelector") and "FrameStart" in nm.TriggerSelector.symbolics:
            nm.TriggerSelector.value = "FrameStart"
        source = "Software" if mode == "software" else self.params.trigger_source
        if source not in nm.TriggerSource.symbolics:
            raise UsageError(f"{where}: TriggerSource {source!r} is not one of "
                             f"{', '.join(nm.TriggerSource.symbolics)}")
        nm.TriggerSource.value = source
        nm.TriggerMode.value = "On"

    def _release(self) -> None:
        ia, h = self._ia, self._harvester
        self._ia = self._harvester = None
        for action in ((lambda: ia.stop(), lambda: ia.destroy()) if ia is not None else ()) + \
                      ((lambda: h.reset(),) if h is not None else ()):
            try:
                action()
            except Exception:  # the device may already be gone
                pass

    # ------------------------------------------------------------- frames

    def stop(self) -> None:
        self._stop.set()

    def frames(self, skip: Callable[[str], bool] | None = None) -> Iterator[Frame]:
        from genicam.gentl import TimeoutException

        p = self.params
        self._open()
        software = p.acquisition == "software"
        hardware = p.acquisition == "hardware"
        n = 0
        restored = False
        try:
            while (p.max_frames is None or n < p.max_frames) and not self._stop.is_set():
                ia = self._ia
                meta: dict[str, Any] = {}
                try:
                    if software:
                        ia.remote_device.node_map.TriggerSoftware.execute()
                    with ia.fetch(timeout=p.timeout_s) as buf:
                        comp = buf.payload.components[0]
                        fmt = comp.data_format
                        image = to_image(comp.data, fmt, comp.width, comp.height)
                        meta["frame_id"] = int(buf.frame_id)
                        try:
                            meta["device_timestamp"] = int(buf.timestamp)
                        except Exception:  # a producer without timestamps
                            pass
                    meta["pixel_format"] = fmt
                    meta["bit_depth"] = bit_depth(fmt)
                    error = None
                except TimeoutException:
                    if hardware:
                        continue  # waiting for the next part is normal
                    image, error = None, f"{self._name}: no frame within {p.timeout_s:g} s (fetch timeout)"
                except ValueError as exc:  # a pixel format we cannot convert
                    image, error = None, f"{self._name}: {exc}"
                except Exception as exc:  # the device is gone: report, then reopen with backoff
                    key = f"{self._name}#{n}"
                    yield Frame(image=None, source=self._name, index=n, path=None, timestamp=time.time(),
                                error=f"{self._name}: camera lost ({type(exc).__name__}: {exc}); reconnecting",
                                meta={"device_lost": True})
                    n += 1
                    if not self._reconnect():
                        return
                    restored = True
                    continue
                if restored:
                    meta["device_restored"] = True
                    restored = False
                key = f"{self._name}#{n}"
                if not (skip is not None and skip(key)):
                    yield Frame(image=image, source=self._name, index=n, path=None, timestamp=time.time(),
                                error=error, meta=meta)
                n += 1
        finally:
            self.close()

    def _reconnect(self) -> bool:
        """Reopen the camera with exponential backoff; false when stopped first."""
        self._release()
        wait = self.params.reconnect_s
        while not self._stop.wait(wait):
            try:
                self._open()
                return True
            except Exception:
                self._release()
                wait = min(wait * 2, self.params.reconnect_max_s)
        return False

    def close(self) -> None:
        self._release()

    # -------------------------------------------------- live settings (the desktop app's camera panel)

    #: features a camera panel offers first, when the camera has them and they are writable
    PANEL_FEATURES = ("ExposureTime", "ExposureTimeAbs", "Gain", "GainRaw", "BlackLevel", "Gamma",
                      "AcquisitionFrameRate")

    def camera_settings(self, limit: int = 8) -> list[dict[str, Any]]:
        """The camera's writable numeric features, exposure and gain first: name, value, min, max, kind.
        Empty while the camera is not open."""
        ia = self._ia
        if ia is None:
            return []
        nm = ia.remote_device.node_map
        names = [n for n in self.PANEL_FEATURES if nm.has_node(n)]
        names += sorted(n for n in feature_names(nm) if n not in names)
        out = []
        for name in names:
            try:
                node = nm.get_node(name)
                kind = type(node).__name__
                if kind not in ("IInteger", "IFloat") or int(node.node.get_access_mode()) != 4:  # RW now
                    continue
                if int(node.node.visibility) >= 3 or not node.node.is_feature():  # invisible helper nodes
                    continue
                out.append({"name": name, "kind": "int" if kind == "IInteger" else "float", "value": node.value,
                            "min": node.min, "max": node.max})
            except Exception:  # a node the producer cannot read right now
                continue
            if len(out) >= limit:
                break
        return out

    def set_feature(self, name: str, value: Any) -> Any:
        """Write one feature while the camera streams (checked like the ``features`` option); returns the
        value the camera reports afterwards. Raises ``UsageError`` naming the feature."""
        ia = self._ia
        if ia is None:
            raise UsageError(f"{self._name}: the camera is not open")
        node, v = check_feature(ia.remote_device.node_map, name, value, f"{self._name}: features")
        try:
            node.value = v
        except Exception as exc:
            raise UsageError(f"{self._name}: features.{name}: the camera refused {value!r}: {exc}") from None
        return node.value
