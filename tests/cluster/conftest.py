"""A one-node Ray cluster on loopback for the cluster tests (run by `make test-cluster`,
which puts pytest in a network namespace holding only ``lo``: tests/cluster/loopback.py).

Outside such a namespace every test here is skipped (Ray would bind the host's
interface); inside it, under ``make``, a missing Ray or a head that does not start fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tiny_model and co.

from loopback import interfaces

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def ray_head() -> Iterator[str]:
    """The address (127.0.0.1:PORT) of a Ray head with 2 CPUs and no GPU, on loopback."""
    if interfaces() != ["lo"]:
        pytest.skip("the Ray tests run only in a network namespace holding just lo "
                    "(make test-cluster)")
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.is_file():
        pytest.fail(f"Ray is not installed in {sys.prefix}: pip install -e '.[cluster]'")
    os.environ.update(RAY_ENV)
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="tpray", dir="/tmp")  # Ray's socket paths must be short
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
         "--num-gpus", "0", "--node-ip-address", "127.0.0.1", "--object-store-memory",
         str(100 * 2**20), "--include-dashboard", "false", "--disable-usage-stats",
         "--temp-dir", temp], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, env={**os.environ, **RAY_ENV})
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited: {head.stderr.read().decode()[-2000:]}")
            up = subprocess.run([str(ray_bin), "status", "--address", address],
                                capture_output=True, env={**os.environ, **RAY_ENV})
            if up.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not come up: {up.stderr.decode()[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
