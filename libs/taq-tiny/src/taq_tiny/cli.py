"""`taq-tiny`: train the tiny-digits preset's weights."""

from __future__ import annotations

import sys

from taq_runtime.cli import ArgumentParser, command_parser


def build_parser() -> ArgumentParser:
    parser, sub = command_parser("taq-tiny", "taq-tiny", __doc__)
    sub.add_parser("train-tiny-digits", help="train the tiny-digits weights (see its --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train-tiny-digits"]:
        from taq_tiny.train import main as train_main

        return train_main(argv[1:])
    build_parser().parse_args(argv)
    return 0
