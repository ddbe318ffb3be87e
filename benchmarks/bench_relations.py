"""jsd_matrix against a per-pair scipy loop: T=100 experts + base, N=20,000 probe examples, C=8.

Run: .venv/bin/python benchmarks/bench_relations.py   (part of `make bench`)

The baseline is what a careful user writes with scipy: for every pair a < b
(the upper triangle, as ours), ``jensenshannon(d[a], d[b], axis=1) ** 2``
averaged over examples. Both run in this process on the same input; ours is
the best of three runs, the baseline runs once (it takes about half a minute).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy.spatial.distance import jensenshannon

from common import compare, peak_rss_mib, timed
from taskpgm.core.relations import jsd_matrix


def make_input(models: int, examples: int, choices: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.dirichlet(np.full(choices, 0.5), size=(models, examples))
    d[d < 0.02] = 0.0  # exact zeros, as in peaked choice distributions
    return d / d.sum(axis=-1, keepdims=True)


def scipy_loop(d: np.ndarray) -> np.ndarray:
    m = d.shape[0]
    out = np.zeros((m, m))
    for a in range(m):
        for b in range(a + 1, m):
            out[a, b] = out[b, a] = np.mean(jensenshannon(d[a], d[b], axis=1) ** 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--choices", type=int, default=8)
    args = parser.parse_args(argv)
    d = make_input(args.tasks + 1, args.examples, args.choices)
    print(f"jsd_matrix: M={args.tasks + 1} models, N={args.examples}, C={args.choices}, "
          f"torch threads={torch.get_num_threads()}, input {d.nbytes / 2**20:.0f} MiB", flush=True)
    before = peak_rss_mib()
    ours, ours_s = timed(lambda: jsd_matrix(d), repeat=3)
    grew = peak_rss_mib() - before
    full = (args.tasks + 1) ** 2 * args.examples * args.choices * 8 / 2**30
    print(f"jsd_matrix peak memory: process peak {peak_rss_mib():.0f} MiB, grew {grew:.0f} MiB "
          f"while computing (a full (M, M, N, C) array would be {full:.1f} GiB)", flush=True)
    ref, base_s = timed(lambda: scipy_loop(d))
    err = float(np.abs(ours - ref).max())
    print(f"jsd_matrix max |ours - scipy| = {err:.2e} (target <= 1e-9)", flush=True)
    met = compare("jsd_matrix", "per-pair scipy loop", base_s, ours_s, 20.0)
    return 0 if met and err <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
