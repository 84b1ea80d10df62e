"""``loupe cameras``: the GenTL producers found, their devices, and OpenCV's camera indices."""
from __future__ import annotations

import argparse
import glob
import json
import re

from host import Command

from .camera import ENV, describe_devices, find_producers, quiet_harvesters


def list_cameras(cti: list[str] | None = None, opencv: bool = True) -> dict:
    """One entry per producer (its devices, or the error that stopped it), plus OpenCV camera indices."""
    from harvesters.core import Harvester

    quiet_harvesters()
    producers = []
    offset = 0  # the source opens every producer in one harvester: device indices run on across them
    for f in find_producers(cti):
        h = Harvester()
        try:
            h.add_file(f)
            h.update()
            devices = describe_devices(h)
            for d in devices:
                d["index"] += offset
            offset += len(devices)
            producers.append({"cti": f, "devices": devices, "error": None})
        except Exception as exc:  # a broken producer must not hide the others
            producers.append({"cti": f, "devices": [], "error": f"{type(exc).__name__}: {exc}"})
        finally:
            h.reset()
    return {"producers": producers, "opencv": opencv_indices() if opencv else []}


def opencv_indices() -> list[int]:
    """The ``camera:INDEX`` values OpenCV can open: the V4L2 devices that answer (no blind probing)."""
    import cv2

    out = []
    for dev in sorted(glob.glob("/dev/video*")):
        m = re.fullmatch(r"/dev/video(\d+)", dev)
        if not m:
            continue
        cap = cv2.VideoCapture(int(m.group(1)))
        try:
            if cap.isOpened():
                out.append(int(m.group(1)))
        finally:
            cap.release()
    return out


class CamerasCommand(Command):
    name = "cameras"
    help = "list GenTL producers, their GenICam cameras, and OpenCV camera indices"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--cti", action="append", metavar="PATH",
                            help=f"a GenTL producer file or folder (repeatable; default: {ENV})")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--no-opencv", action="store_true", help="do not open /dev/video* devices")

    def run(self, args: argparse.Namespace) -> int:
        found = list_cameras(args.cti, opencv=not args.no_opencv)
        if args.json:
            print(json.dumps(found, indent=2))
            return 0
        if not found["producers"]:
            print(f"no GenTL producer found (set {ENV} to the folder of your camera vendor's .cti file)")
        for p in found["producers"]:
            print(p["cti"])
            if p["error"]:
                print(f"  FAILED: {p['error']}")
            for d in p["devices"]:
                print(f"  genicam:{d['index']:<3} {d['vendor']} {d['model']}  serial={d['serial']}  "
                      f"interface={d['interface']}  id={d['id']}")
            if not p["devices"] and not p["error"]:
                print("  (no devices)")
        cams = found["opencv"]
        print("OpenCV cameras: " + (", ".join(f"camera:{i}" for i in cams) if cams else "none"))
        return 0
