"""The command line's parser: which subcommand a command line names, and `serve` parsed without
importing the on-call commands and the fault proxy (their imports delayed its first search)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ragvisor.cli.parser import OPS_COMMANDS, build_parser, command_in


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["serve", "--port", "8321"], "serve"),
        (["--log-level", "debug", "serve"], "serve"),
        (["--log-level=debug", "status", "--json"], "status"),
        (["--log", "debug", "health"], "health"),  # argparse accepts the abbreviation
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_the_first_word_that_is_no_option_nor_its_value(argv, command):
    """Options and `--log-level`'s value (also abbreviated, also as `=value`) are skipped."""
    assert command_in(argv) == command


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "debug", "serve", "--corpus", "/n", "--data-dir", "/d", "--port", "9"],
        ["sync", "--json", "--corpus", "/n"],
        ["--log-level", "serve", "status", "--json"],  # a value spelled like a command
        ["health", "--url", "http://127.0.0.1:1", "--deep"],
    ],
)
def test_the_parser_for_the_guessed_command_reads_a_line_as_the_full_parser_does(argv):
    """`build_parser(command_in(argv))` gives the same namespace as `build_parser()`, and
    still lists every subcommand."""
    guessed = build_parser(command_in(argv))
    assert guessed.parse_args(argv) == build_parser().parse_args(argv)
    choices = guessed._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(choices) >= OPS_COMMANDS | {"serve", "sync"}


def test_building_the_serve_parser_imports_neither_the_proxy_nor_the_on_call_commands():
    """In a fresh interpreter: `ragvisor.faultproxy` and `ragvisor.cli.oncall` stay unloaded
    for `serve`, and are loaded for `status`."""
    probe = (
        "import sys; from ragvisor.cli.parser import build_parser; build_parser({!r}); "
        "print(sorted(m for m in ('ragvisor.faultproxy', 'ragvisor.cli.oncall') "
        "if m in sys.modules))"
    )
    both = "['ragvisor.cli.oncall', 'ragvisor.faultproxy']"
    for command, loaded in (("serve", "[]"), ("sync", "[]"), ("status", both)):
        done = subprocess.run(
            [sys.executable, "-c", probe.format(command)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert done.stdout.strip() == loaded, command
