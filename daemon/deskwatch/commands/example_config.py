"""``deskwatch example-config``: print the documented example configuration."""

from __future__ import annotations

import argparse

from deskwatch.config.example import example_text

NAME = "example-config"
HELP = "print a config file documenting every key with its default (what config.example.yaml holds)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    text = example_text()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        print(text, end="")
    return 0
