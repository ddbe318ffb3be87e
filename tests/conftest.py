"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def bigbench_archive() -> None:
    """BIG-bench's task files: the ``bigbench==1.0.0`` source archive, downloaded once into the
    cache (``$TASKPGM_HOME``) and indexed.

    The tests that read real BIG-bench tasks take this fixture. Where the package index
    answers that it does not serve the archive (a filtered mirror), they are skipped with the
    index's answer as the reason, which ``-ra`` prints at the end of the run; every other
    failure to read it fails the test."""
    from taskpgm.tasks import bigbench

    refused = bigbench.not_served()
    if refused is not None:
        pytest.skip(f"the package index does not serve BIG-bench's archive: {refused}")
