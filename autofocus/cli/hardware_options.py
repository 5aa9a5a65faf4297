"""The hardware options shared by ``check``, ``focus`` and ``acquire``: ``--config`` and ``--hw``.

Settings come from a TOML file (``--config``: flat ``name = value`` lines with the names of
``autofocus.hardware.HardwareConfig``; the service's own config file works too, its service-only
names are reported as ignored) and from ``--hw NAME=VALUE`` options, which win over the file.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any


def parse_setting(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``; VALUE as JSON when it parses (numbers, true/false, [lo, hi]), else as text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    name, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


def add_hardware_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, hw_help: str) -> None:
    """Add ``--config FILE`` and repeatable ``--hw NAME=VALUE`` to ``parser``."""
    parser.add_argument("--config", type=Path, default=None, help="TOML file with hardware settings (flat names)")
    parser.add_argument("--hw", type=parse_setting, action="append", default=[], metavar="NAME=VALUE", help=hw_help)


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Merge the TOML file and the command-line values; return (hardware settings, ignored names)."""
    from autofocus.hardware import HardwareConfig

    values: dict[str, Any] = {}
    ignored: list[str] = []
    if config_file is not None:
        with config_file.open("rb") as fh:
            data = tomllib.load(fh)
        for name, value in data.items():
            if name in HardwareConfig.model_fields:
                values[name] = value
            else:
                ignored.append(name)
    values.update(overrides)
    return values, sorted(ignored)
