"""``taskpgm signals CONFIG``: score the base and every expert on the probe set."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "signals",
        help="score the base model and every expert on the whole probe set",
        description="Score the base model and every expert of CONFIG on every task's probe "
        "split (experts still missing are trained first). Finished work is reused.",
    )
    parser.add_argument("config", help="run configuration (YAML)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from taskpgm import config, signals

    cfg = config.load(args.config)
    result = signals.run(cfg)
    print(result.path)
    return 0
