"""The math core: numpy in, numpy out, no model, no I/O, no torch.

Relations between tasks (:mod:`~taskpgm.core.relations`, its JSD blocks in
:mod:`~taskpgm.core.jsd`), the energies (:mod:`~taskpgm.core.mrf`,
:mod:`~taskpgm.core.split`, :mod:`~taskpgm.core.reference`), their exact solvers
(:mod:`~taskpgm.core.qp`, :mod:`~taskpgm.core.budget`), the mixture's counts and
draws (:mod:`~taskpgm.core.mixture`), and the statistics every comparison uses
(:mod:`~taskpgm.core.stats`, :mod:`~taskpgm.core.summary`), plus the synthetic
tasks their tests run on (:mod:`~taskpgm.core.synthetic`). Nothing here imports
torch, transformers or peft (``tests/test_layout.py`` reads every import).
"""
