"""Subcommands of ``dashnet``: one module each, each with ``add_parser(subparsers)``."""
