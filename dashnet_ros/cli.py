"""The ``dashnet`` command.

Each subcommand lives in ``dashnet_ros/commands/<name>.py`` and exposes
``add_parser(subparsers)``, which registers itself with ``set_defaults(func=...)``.
A subcommand's ``func(args)`` returns an exit code.  Errors that a user can fix are
raised as :class:`UserError` and printed without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


class UserError(Exception):
    """A problem the user can fix (bad path, impossible parameter, ...)."""


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(prog="dashnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        mod.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"dashnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dashnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m dashnet_ros.cli`: use the package's module, so that the UserError raised by
    # the subcommands is the class main() catches (not a second copy in __main__)
    from dashnet_ros.cli import main as _main

    sys.exit(_main())
