"""taskpgm: choose a fine-tuning task mixture from how per-task experts behave.

The math core needs no model:

* :mod:`taskpgm.relations` turns what models predict on a probe set into task
  relations (Jensen–Shannon divergence, displacement cosine, transfer PMI) and
  an affinity matrix S;
* :mod:`taskpgm.mrf` minimizes the MRF energy ½ pᵀ S p − ρ uᵀ p exactly on the
  probability simplex, optionally with caps and a budget of k tasks.
"""

from __future__ import annotations

from taskpgm.errors import TaskPGMError

__version__ = "0.1.0"
__all__ = ["TaskPGMError", "__version__"]
