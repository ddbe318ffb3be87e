"""taskpgm: choose a fine-tuning task mixture from how per-task experts behave.

The math core needs no model:

* :mod:`taskpgm.core.relations` turns what models predict on a probe set into task
  relations (Jensen–Shannon divergence, displacement cosine, transfer PMI) and
  an affinity matrix S;
* :mod:`taskpgm.core.mrf` minimizes the MRF energy ½ pᵀ S p − ρ uᵀ p exactly on the
  probability simplex, optionally with caps and a budget of k tasks.

The whole pipeline, as ``taskpgm run`` runs it: :func:`taskpgm.run` (and
:func:`taskpgm.load_run` for a finished run directory), from :mod:`taskpgm.api`.
"""

from __future__ import annotations

from typing import Any

from taskpgm.errors import TaskPGMError

__version__ = "0.1.0"
__all__ = ["Run", "TaskPGMError", "__version__", "load_run", "run"]


def __getattr__(name: str) -> Any:
    """``run``, ``load_run`` and ``Run`` load on first use (``import taskpgm`` stays light)."""
    if name in ("run", "load_run", "Run"):
        from taskpgm import api

        return getattr(api, name)
    raise AttributeError(f"module 'taskpgm' has no attribute {name!r}")
