"""``taskpgm experts CONFIG``: train (or import) one LoRA expert per task, resumably."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "experts",
        help="train one LoRA expert per task of a run config (finished experts are reused)",
        description="Train (or import) one LoRA expert per task in CONFIG. A killed run resumes "
        "from the last checkpoint; finished experts are reused.",
    )
    parser.add_argument("config", help="run configuration (YAML)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from taskpgm import config, experts

    cfg = config.load(args.config)
    _, _, found = experts.run(cfg)
    for task, expert in found.items():
        print(f"{task}\t{expert.source}\t{expert.path}")
    return 0
