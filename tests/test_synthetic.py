from __future__ import annotations

import numpy as np

from taskpgm.core.relations import displacement_cosine, jsd_matrix
from taskpgm.core.synthetic import FAMILY, synthetic_signals


def test_synthetic_family_is_visible_in_the_displacement_cosine():
    sig = synthetic_signals()
    assert np.allclose(sig.dists.sum(axis=-1), 1.0)
    k = displacement_cosine(jsd_matrix(sig.dists))
    fam = np.asarray(FAMILY)
    same = (fam[:, None] == fam[None, :]) & ~np.eye(len(fam), dtype=bool)
    other = fam[:, None] != fam[None, :]
    assert k[same].min() > k[other].max()
