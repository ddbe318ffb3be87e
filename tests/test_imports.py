"""The model-free parts start without torch: the CLI's parser, the report, the readers."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft")


def modules_after(code: str) -> set[str]:
    """The heavy modules loaded after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("code", [
    "from taskpgm.cli import build_parser; build_parser()",
    "import taskpgm.report",
    "import taskpgm.readers, taskpgm.weights, taskpgm.relations_stage, taskpgm.evaluation",
    # the numpy-only core, and what the model-free code holds of the model side
    "import taskpgm.core.relations, taskpgm.core.qp, taskpgm.core.mrf, taskpgm.core.budget, "
    "taskpgm.core.split, taskpgm.core.mixture, taskpgm.core.stats, taskpgm.core.summary, "
    "taskpgm.core.reference, taskpgm.core.jsd, taskpgm.core.synthetic, taskpgm.predictions",
    "import taskpgm.relations_stage, taskpgm.jsd_torch",
    "import taskpgm.placement, taskpgm.errors, taskpgm.inputs, taskpgm.rundir, taskpgm.tokens",
    "import taskpgm.cluster, taskpgm.workload, taskpgm.exports, taskpgm.oracles",
])
def test_no_torch(code):
    assert modules_after(code) == set()


def test_pyarrow_waits_for_the_task_loaders():
    probe = ("from taskpgm.cli import build_parser; build_parser()\nimport sys\n"
             "assert 'pyarrow' not in sys.modules\nfrom taskpgm.tasks import load_task\n"
             "assert 'pyarrow' in sys.modules")
    subprocess.run([sys.executable, "-c", probe], check=True)
