"""Source archives come from the index's JSON API, once, sha256-checked, never half-written."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from taskpgm.cache import pip_download
from taskpgm.errors import NotFoundError, TaskPGMError

PAYLOAD = b"not really a tarball" * 1000


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    state: dict[str, object] = {"hits": 0, "sha": hashlib.sha256(PAYLOAD).hexdigest()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["hits"] = int(state["hits"]) + 1  # type: ignore[call-overload]
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/simple/demo-pkg/":
                body = json.dumps({"files": [
                    {"filename": "demo_pkg-1.0.tar.gz", "url": f"{host}/files/demo.tar.gz",
                     "hashes": {"sha256": state["sha"]}}]}).encode()
            elif self.path == "/files/demo.tar.gz":
                body = PAYLOAD
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_address[1]}/simple")
    yield state
    server.shutdown()


def test_sdist_downloaded_once(home: Path, index: dict[str, object]):
    path = pip_download("demo-pkg==1.0", sdist=True)
    assert path.read_bytes() == PAYLOAD and path.name == "demo_pkg-1.0.tar.gz"
    hits = index["hits"]
    assert pip_download("demo-pkg==1.0", sdist=True) == path
    assert index["hits"] == hits  # served from the cache
    assert [p.name for p in (home / "downloads").iterdir()] == ["demo-pkg==1.0"]


def test_corrupt_or_missing_download_leaves_nothing(home: Path, index: dict[str, object]):
    index["sha"] = "0" * 64
    with pytest.raises(TaskPGMError, match="is corrupt"):
        pip_download("demo-pkg==1.0", sdist=True)
    assert list((home / "downloads").iterdir()) == []
    with pytest.raises(NotFoundError, match=r"does not serve demo-pkg-2\.0\.tar\.gz") as err:
        pip_download("demo-pkg==2.0", sdist=True)
    folder = home / "downloads" / "demo-pkg==2.0"
    assert f"put it alone in {folder}/" in str(err.value)  # the offline way in, named
    assert str(err.value).count("needs the package index once") == 1
    with pytest.raises(NotFoundError, match=r"could not download other==1\.0"):
        pip_download("other==1.0", sdist=True)
    assert list((home / "downloads").iterdir()) == []
    # The file placed by hand where the error said is read without asking the index.
    folder.mkdir(parents=True)
    (folder / "demo_pkg-2.0.tar.gz").write_bytes(PAYLOAD)
    hits = index["hits"]
    assert pip_download("demo-pkg==2.0", sdist=True).read_bytes() == PAYLOAD
    assert index["hits"] == hits
