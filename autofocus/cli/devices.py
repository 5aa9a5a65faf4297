"""``autofocus devices``: list the hardware this computer can see, without moving anything.

- serial ports (``serial.tools.list_ports``), with a hint at the USB-serial chip;
- V4L2 cameras (``/dev/video*``) and whether OpenCV opens them, at which size;
- a running Micro-Manager: a short TCP connect to ``127.0.0.1:<mm-port>`` (4827);
- the ``mm-test-adapters`` demo adapter folder and the pymmcore / pycromanager versions.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
from importlib import metadata
from typing import Any

HELP = "list serial ports, cameras and a running Micro-Manager this computer can see"

# USB vendor IDs of common USB-serial chips, as a hint only (any controller may use any chip).
_USB_VENDORS: dict[int, str] = {
    0x0403: "FTDI USB-serial (Prior, Marzhauser and many others)",
    0x10C4: "Silicon Labs CP210x USB-serial (ASI and others)",
    0x1A86: "WCH CH340 USB-serial (Arduino clones: GRBL?)",
    0x2341: "Arduino (GRBL?)",
    0x067B: "Prolific PL2303 USB-serial",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mm-port", type=int, default=4827, help="Micro-Manager server port to probe (default 4827)")
    parser.add_argument("--no-open", action="store_true", help="list /dev/video* without opening them")
    parser.add_argument("--open-timeout-s", type=float, default=3.0, help="give up opening one camera after this")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _by_id_links() -> dict[str, list[str]]:
    """Real device -> its stable ``/dev/serial/by-id`` names (Linux), for ``serial_port``."""
    links: dict[str, list[str]] = {}
    for link in sorted(glob.glob("/dev/serial/by-id/*")):
        links.setdefault(os.path.realpath(link), []).append(link)
    return links


def serial_ports() -> list[dict[str, Any]]:
    from serial.tools import list_ports

    by_id = _by_id_links()
    ports = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        ports.append(
            {
                "device": port.device,
                "description": port.description,
                "hwid": port.hwid,
                "vid_pid": f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None and port.pid is not None else None,
                "manufacturer": port.manufacturer,
                "hint": _USB_VENDORS.get(port.vid) if port.vid is not None else None,
                "stable_names": by_id.get(os.path.realpath(port.device), []),
            }
        )
    return ports


def _probe_camera(path: str) -> dict[str, Any]:
    import cv2

    cap = cv2.VideoCapture(path, cv2.CAP_V4L2)
    try:
        if not cap.isOpened():
            return {"opens": False}
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        ok, frame = cap.read()
        return {
            "opens": True,
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fourcc": "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)) if fourcc else None,
            "frame": list(frame.shape) if ok and frame is not None else None,
        }
    finally:
        cap.release()


def cameras(*, open_them: bool, timeout_s: float, pattern: str = "/dev/video*") -> list[dict[str, Any]]:
    """Every device node matching ``pattern``; with ``open_them``, what V4L2 makes of it."""
    found = []
    for path in sorted(glob.glob(pattern)):
        entry: dict[str, Any] = {"device": path}
        if open_them:
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            try:
                entry.update(pool.submit(_probe_camera, path).result(timeout=timeout_s))
            except concurrent.futures.TimeoutError:
                entry.update(opens=False, error=f"no answer within {timeout_s:g} s")
            except Exception as exc:  # reported in the listing
                entry.update(opens=False, error=f"{type(exc).__name__}: {exc}")
            finally:
                pool.shutdown(wait=False)
        found.append(entry)
    return found


def micromanager(port: int) -> dict[str, Any]:
    from drivers.micromanager import java_server_listening

    info: dict[str, Any] = {
        "server_port": port,
        "server_listening": java_server_listening(port, timeout_s=0.3),
        "pymmcore": _version("pymmcore"),
        "pycromanager": _version("pycromanager"),
        "demo_adapters": None,
    }
    try:
        import mm_test_adapters
    except ImportError:
        return info
    info["demo_adapters"] = str(mm_test_adapters.device_adapter_path())
    return info


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def run(args: argparse.Namespace) -> int:
    report = {
        "serial_ports": serial_ports(),
        "cameras": cameras(open_them=not args.no_open, timeout_s=args.open_timeout_s),
        "micromanager": micromanager(args.mm_port),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print("Serial ports (stage=asi|prior|tango|grbl, serial_port=<device>):")
    for p in report["serial_ports"]:
        hint = f"  [{p['hint']}]" if p["hint"] else ""
        print(f"  {p['device']:<16} {p['description']}  {p['vid_pid'] or ''}{hint}")
        for name in p["stable_names"]:
            print(f"      stable name: {name}")
    if not report["serial_ports"]:
        print("  none")
    print("Cameras (camera=opencv, opencv_device=<device>):")
    for c in report["cameras"]:
        if "opens" not in c:
            state = "not opened (--no-open)"
        elif c["opens"]:
            state = f"opens: {c['width']}x{c['height']} {c['fourcc'] or ''}, frame {c['frame']}"
        else:
            state = f"does not open{': ' + c['error'] if c.get('error') else ''}"
        print(f"  {c['device']:<16} {state}")
    if not report["cameras"]:
        print("  none")
    mm = report["micromanager"]
    print("Micro-Manager (camera/stage=micromanager):")
    listening = "listening" if mm["server_listening"] else "nothing listening"
    print(f"  server on 127.0.0.1:{mm['server_port']}: {listening} (mm_backend=java)")
    print(f"  pymmcore {mm['pymmcore']}, pycromanager {mm['pycromanager']}")
    print(f"  demo adapters (mm_backend=python): {mm['demo_adapters'] or 'mm-test-adapters not installed'}")
    return 0
