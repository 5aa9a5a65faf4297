"""``autofocus serve``: the REST control service and the operator's web page (uvicorn).

Settings come from a TOML file (``--config`` or ``$AUTOFOCUS_CONFIG``), ``AUTOFOCUS_<NAME>``
environment variables and ``--set NAME=VALUE`` (highest priority); see docs/service.md.
Without a configured ``api_key`` a random one is generated and printed at start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HELP = "start the REST control service and web page (127.0.0.1:8000, simulated microscope by default)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="TOML settings file (default: $AUTOFOCUS_CONFIG)")
    parser.add_argument("--host", default=None, help="address to bind (setting host; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="TCP port (setting port; default 8000)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any setting, e.g. --set sim_frame_width=1296 --set stage_limits_um=[-300,300] (JSON values)",
    )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; a VALUE that parses as JSON is used as such, else as a string."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        values[name.strip().lower()] = value
    return values


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import SecretStr

    from service.app import create_app, generate_api_key
    from service.settings import load_settings, unknown_env_settings

    overrides = parse_overrides(args.overrides)
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = load_settings(args.config, overrides)
    for name in unknown_env_settings(os.environ):
        print(f"autofocus serve: warning: {name} is not a setting; ignored (see docs/service.md)", file=sys.stderr)

    if settings.api_key is None:
        key = generate_api_key()
        settings = settings.model_copy(update={"api_key": SecretStr(key)})
        origin = "generated for this run (set api_key / AUTOFOCUS_API_KEY to keep one)"
    else:
        key = settings.api_key.get_secret_value()
        origin = "from the settings"
    backend = f"camera={settings.camera}, stage={settings.stage}"
    print(f"autofocus serve: http://{settings.host}:{settings.port}/  ({backend})", flush=True)
    print(f"autofocus serve: API key ({origin}): {key}", flush=True)

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=3,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.run()
    startup_error = getattr(app.state, "startup_error", None)
    if startup_error is not None:
        raise startup_error
    return 0 if server.started else 1
