"""What every benchmark states about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_record() -> dict[str, object]:
    """The machine as a result file records it: CPU model, cores visible, platform."""
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
