"""Speed of the simulated microscope: 224x224 patches (dataset rendering) and full frames (live demo).

Prints the figures with the machine they were measured on and writes them to
``benchmarks/results/simulator.json``. Run: ``.venv/bin/python benchmarks/bench_simulator.py``
(``--quick`` for fewer repetitions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # benchmarks/machine.py (scripts run from benchmarks/)

from drivers.simulated import OBJECTIVES, SPECIMEN_KINDS, SimulatedMicroscope

RESULTS = Path(__file__).resolve().parent / "results" / "simulator.json"


def machine() -> dict[str, object]:
    cpu = cpu_model()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def bench_patches(repeats: int) -> list[dict[str, object]]:
    rows = []
    rng = np.random.default_rng(0)
    for objective in OBJECTIVES:
        for kind in SPECIMEN_KINDS:
            scope = SimulatedMicroscope(seed=1, objective=objective, specimen=kind)
            scope.render_patch(0.0, 0.0, 1.0)  # warm-up (imports, caches of the optics)
            new_field, same_field, new_cpu, same_cpu = [], [], [], []
            for _ in range(repeats):
                x, y = (float(v) for v in rng.uniform(-20_000, 20_000, 2))
                c0, t0 = time.process_time(), time.perf_counter()
                scope.render_patch(x, y, float(rng.uniform(-10, 10)))
                c1, t1 = time.process_time(), time.perf_counter()
                scope.render_patch(x, y, float(rng.uniform(-10, 10)))
                c2, t2 = time.process_time(), time.perf_counter()
                new_field.append(t1 - t0)
                same_field.append(t2 - t1)
                new_cpu.append(c1 - c0)
                same_cpu.append(c2 - c1)
            row = {
                "objective": objective,
                "specimen": kind,
                "size": 224,
                "source_points": scope.optics.source_points,
                "new_field_ms_median": 1000 * statistics.median(new_field),
                "same_field_new_z_ms_median": 1000 * statistics.median(same_field),
                # patches run on one thread: CPU time is what an idle machine's wall time would be
                "new_field_cpu_ms_median": 1000 * statistics.median(new_cpu),
                "same_field_new_z_cpu_ms_median": 1000 * statistics.median(same_cpu),
            }
            rows.append(row)
            print(
                f"patch 224  {objective:9s} {kind:7s} new field {row['new_field_ms_median']:6.1f} ms "
                f"(cpu {row['new_field_cpu_ms_median']:6.1f})   same field, new z "
                f"{row['same_field_new_z_ms_median']:6.1f} ms (cpu {row['same_field_new_z_cpu_ms_median']:6.1f})"
            )
    return rows


def bench_frames(objectives: list[str], kinds: list[str]) -> list[dict[str, object]]:
    rows = []
    for objective in objectives:
        for kind in kinds:
            scope = SimulatedMicroscope(seed=1, objective=objective, specimen=kind)
            with scope.camera as cam, scope.focus_stage as stage:
                c0, t0 = time.process_time(), time.perf_counter()
                cam.snap()
                c1, t1 = time.process_time(), time.perf_counter()
                stage.move_by(1.5)
                c2, t2 = time.process_time(), time.perf_counter()
                cam.snap()
                c3, t3 = time.process_time(), time.perf_counter()
                cam.snap()
                t4 = time.perf_counter()
            row = {
                "objective": objective,
                "specimen": kind,
                "frame": list(scope.frame_shape),
                "first_snap_s": t1 - t0,
                "first_snap_cpu_s": c1 - c0,
                "new_z_snap_s": t3 - t2,
                "new_z_snap_cpu_s": c3 - c2,
                "same_z_snap_s": t4 - t3,
            }
            rows.append(row)
            print(
                f"frame {scope.frame_shape[1]}x{scope.frame_shape[0]} {objective:9s} {kind:7s} first snap "
                f"{row['first_snap_s']:5.2f} s (cpu {row['first_snap_cpu_s']:5.2f}; specimen + optics)   new z "
                f"{row['new_z_snap_s']:5.2f} s (cpu {row['new_z_snap_cpu_s']:5.2f})   "
                f"same z {row['same_z_snap_s']:5.2f} s"
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and frames")
    args = parser.parse_args()
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_average_1min']}, "
        f"numpy {info['numpy']}, scipy {info['scipy']}"
    )
    patches = bench_patches(3 if args.quick else 8)
    if args.quick:
        frames = bench_frames(["20x/0.75"], ["cells"])
    else:
        frames = bench_frames(list(OBJECTIVES), ["cells", "tissue"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": info,
                "patches": patches,
                "frames": frames,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
