"""Durations and shares on the command lines: "nan", "inf" and negative numbers are usage
errors naming the option, not a wait that never ends or a loop that spins."""

from __future__ import annotations

import argparse

import pytest

from deskwatch_collector.cli import build_parser as collector_parser
from deskwatch_contract.cliargs import seconds, seconds_at_least, share
from deskwatch_desk.cli import build_parser as desk_parser


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "soon", ""])
def test_a_duration_is_a_finite_number_of_seconds(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be a number of seconds"):
        seconds(text)


def test_durations_and_shares_that_are_numbers_pass() -> None:
    assert seconds("0") == 0.0 and seconds("2.5") == 2.5
    assert seconds_at_least(1.0)("600") == 600.0
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        seconds_at_least(1.0)("0")
    assert share("0.1") == 0.1
    for bad in ("nan", "1.5", "-0.1"):
        with pytest.raises(argparse.ArgumentTypeError, match="from 0 to 1"):
            share(bad)


@pytest.mark.parametrize(
    ("parser", "argv", "option"),
    [
        (collector_parser, ["run", "--purge-every", "nan"], "--purge-every"),  # the purge loop would spin
        (collector_parser, ["run", "--purge-every", "0"], "--purge-every"),
        (
            collector_parser,
            ["jobs", "start", "--fleet", "--signing-key", "k.pem", "--kind", "config", "--max-failure-rate", "nan"],
            "--max-failure-rate",
        ),
        (desk_parser, ["pause", "--reason", "water", "--minutes", "5", "--wait", "nan"], "--wait"),
        (desk_parser, ["run", "--every", "inf"], "--every"),
    ],
)
def test_the_programs_refuse_them_naming_the_option(
    parser: object, argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        parser().parse_args(argv)  # type: ignore[operator]
    assert done.value.code == 2
    assert option in capsys.readouterr().err
