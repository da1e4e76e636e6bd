"""Every option of every `mcd` subcommand has help text, and each states its default at most once."""

from __future__ import annotations

import argparse

import pytest

from sampler.cli import SUBCOMMANDS, subcommand_parser


def _options(name: str) -> list[tuple[str, str]]:
    """(option string, rendered help) of each option of `mcd NAME`, as `--help` prints it."""
    parser = subcommand_parser(name)
    formatter = parser._get_formatter()
    rendered = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        text = formatter._expand_help(action) if action.help else ""
        rendered.append((action.option_strings[-1], " ".join(text.split())))
    return rendered


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_option_has_help_with_its_default_once(name: str) -> None:
    """Planted bugs: an option added without help (`--lr` had none), the ArgumentDefaultsHelpFormatter back
    (`(default: the source's) (default: None)`)."""
    options = _options(name)
    missing = [option for option, text in options if not text]
    assert missing == [], f"mcd {name}: options without help: {missing}"
    doubled = [option for option, text in options if text.count("(default") > 1]
    assert doubled == [], f"mcd {name}: options stating their default twice: {doubled}"
    assert not [option for option, text in options if "(default: None)" in text]


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_optional_option_that_takes_a_value_states_its_default(name: str) -> None:
    """An option a user may leave out says what happens then (a value, or in words what None means); flags and
    required options have nothing to state.  Planted bug: a None default whose help says nothing about it (the
    formatter adds no "(default: ...)" for None), e.g. --heldout's "the bench's own" without the number."""
    parser = subcommand_parser(name)
    formatter = parser._get_formatter()
    silent = [action.option_strings[-1] for action in parser._actions
              if action.option_strings and action.nargs != 0 and not action.required
              and "default" not in formatter._expand_help(action)]
    assert silent == [], f"mcd {name}: options that do not state their default: {silent}"


def test_full_help_renders_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from sampler.cli import main

    for name in SUBCOMMANDS:
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: mcd {name}") and out.count("(default: None)") == 0, name


def test_verify_without_mutants_says_they_were_not_run(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mcd verify --no-mutants` does not report "0/0 caught"; it takes --threads like the other commands."""
    from sampler.cli import main

    out = tmp_path / "report"
    assert main(["verify", "--quick", "--claims", "1", "--no-mutants", "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the planted bugs were not run" in printed and "0/0" not in printed
    report = (out / "report.md").read_text()
    assert "the planted bugs were not run" in report and "0/0" not in report
