"""The ``autofocus`` command line: one entry point, one module per subcommand.

Each subcommand lives in ``autofocus/cli/<name>.py`` and provides ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Subcommand modules import only light
modules at import time (heavy ones, torch or the simulator, inside ``run``) so that
``autofocus --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from drivers.errors import AutofocusError

# (subcommand, module under autofocus.cli). Order is the order shown in --help.
SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("serve", "serve"),
    ("predict", "predict"),
    ("focus", "focus"),
    ("offset", "offset"),
    ("calibrate", "calibrate"),
    ("simulate", "simulate"),
    ("acquire", "acquire"),
    ("dataset", "dataset"),
    ("train", "train"),
    ("finetune", "finetune"),
    ("evaluate", "evaluate"),
    ("export", "export"),
    ("devices", "devices"),
    ("check", "check"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autofocus",
        description="Single-frame microscope autofocus with LDSE-NET: serve, predict, "
        "simulate, acquire datasets, train and commission hardware.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS:
        module = importlib.import_module(f"autofocus.cli.{module_name}")
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except (AutofocusError, ValueError, FileNotFoundError) as exc:
        print(f"autofocus {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autofocus {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
