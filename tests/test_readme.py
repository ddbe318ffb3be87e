"""The README's Python example runs as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    math = [b for b in blocks if "TaskMixtureMRF" in b]  # the math core's example; the
    assert math, "the README has a math-core example"  # pipeline's runs in test_pipeline
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(math[0], str(README), "exec"), namespace)
    model = namespace["model"]
    assert abs(model.weights_.sum() - 1.0) < 1e-12  # type: ignore[attr-defined]
    assert len(namespace["budgeted"].selected_) <= 2  # type: ignore[attr-defined]
