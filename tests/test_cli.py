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


def test_config_show_doc_prints_every_key_with_its_help(capsys):
    assert main(["config", "show", "--doc"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Run configuration reference")
    assert "| `experts.rank` | `int`, ≥ 1 | `8` | LoRA rank: higher fits more of the task" in out
    assert "## `tracking`" in out and "## `execution`" in out


def test_config_show_resolves_a_config_and_rejects_doc_with_one(capsys):
    import yaml

    assert main(["config", "show", "--set", "experts.rank=4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["experts"]["rank"] == 4 and shown["tasks"]["splits"]["max_train"] == 2000
    assert main(["config", "show", "--doc", "--set", "experts.rank=4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: config show --doc prints the reference")
    assert "Traceback" not in err
    assert main(["config", "show", "--set", "experts.rank=many"]) == 1
    err = capsys.readouterr().err
    assert "experts.rank" in err and "Traceback" not in err
