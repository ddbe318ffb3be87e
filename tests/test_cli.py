from __future__ import annotations

from taskpgm.cli import main


def test_help_exits_cleanly(capsys):
    assert main([]) == 2
    assert "usage: taskpgm" in capsys.readouterr().out
