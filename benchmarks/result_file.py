"""Where a benchmark's result goes: ``benchmarks/results/<name>.json``, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, result: dict[str, Any]) -> Path:
    """``result`` as indented JSON in ``RESULTS/<name>.json`` (an absolute ``name`` is used as it is);
    a crash leaves the old file or the new one, never half of one."""
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    return path
