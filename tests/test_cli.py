from __future__ import annotations

from taskpgm.cli import main


def test_help_exits_cleanly(capsys):
    assert main([]) == 2
    assert "usage: taskpgm" in capsys.readouterr().out


def test_demo_prints_weights_and_says_it_is_synthetic(capsys):
    assert main(["demo", "--synthetic"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out
    assert "KKT residual" in out
    # rho = 1/T with an interior optimum gives uniform weights: 1/6 on every row.
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(
        ("addition", "subtraction", "multiplication", "hyperbaton", "navigate", "intent"))]
    weight_rows = [r for r in rows if len(r) == 4]
    assert len(weight_rows) == 6
    assert all(abs(float(r[2]) - 1 / 6) < 1e-4 for r in weight_rows)
    assert abs(sum(float(r[1]) for r in weight_rows) - 1.0) < 1e-3


def test_demo_bad_budget_is_a_clean_error(capsys):
    assert main(["demo", "--synthetic", "--budget", "9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: budget k=9 is larger than the number of tasks (6)")
    assert "Traceback" not in err


def test_every_argument_has_help_and_options_show_their_defaults():
    import argparse

    from taskpgm.cli import all_parsers, build_parser

    parsers = all_parsers(build_parser())
    assert len(parsers) > 12
    for p in parsers:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{p.prog}: {action.dest} has no help"
    swarm = next(p for p in parsers if p.prog.endswith(" swarm"))
    assert "(default: 32)" in swarm.format_help()
