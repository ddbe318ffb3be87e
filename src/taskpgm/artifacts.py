"""Stage artifacts: fingerprinted directories, written atomically, read only when complete.

An artifact of stage ``s`` named ``n`` lives at ``<root>/<s>/<n>-<fingerprint>/``.
Its fingerprint is a hash of

    (stage, stage version, parents' fingerprints, parameters that differ from the
     stage's frozen defaults),

so a parameter left at its default does not enter the hash (adding a defaulted
parameter keeps old artifacts valid), and any change upstream changes every
fingerprint downstream. The defaults a stage passes are a literal snapshot kept
beside its ``VERSION`` (``experts.DEFAULTS``, ...), never today's config
defaults: were they read from the config classes, changing a default in code
would leave the hash unchanged and silently reuse artifacts built under the old
value. tests/test_fingerprints.py fails when a config default drifts from its
stage's snapshot, until the version is bumped and the snapshot refreshed.

A stage writes into a temporary sibling directory and renames it into place
after writing ``manifest.json`` last; a directory without ``manifest.json`` is
never read. Work that must survive a kill before the
artifact is finished (training checkpoints, per-model shards) goes to a
persistent ``.<n>-<fingerprint>.work`` directory, removed once the artifact exists.

The manifest holds the sha256 and size of every file of the artifact. :func:`find`
checks them: a damaged artifact (truncated, replaced, garbage) is removed with a
one-line note and its stage computes it again.

Several processes may share a cache, on one machine or on a filesystem that several
machines mount: :func:`claim` takes a per-artifact lock file
(``.<n>-<fingerprint>.lock``, created with O_EXCL) around "find, else compute and
write", so a second process waits and then reuses the first one's work. The holder
touches the lock every ``HEARTBEAT`` seconds. A lock is stale when its holder is a
dead process of this machine, or when its modification time has not moved for
``STALE`` seconds of the waiter's own clock (so clocks of different machines need not
agree); a stale lock is taken over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskpgm import atomic, cache
from taskpgm.errors import DataError

MANIFEST = "manifest.json"
HEARTBEAT = 10.0  # seconds between a lock holder's touches
STALE = 120.0  # seconds without a touch after which another machine's lock is dead
POLL = 0.5  # seconds between a waiter's looks
_held: set[Path] = set()  # artifacts this process holds the claim of
_verified: dict[Path, tuple[int, int]] = {}  # manifest (mtime_ns, size) last found intact


def default_root() -> Path:
    """``$TASKPGM_HOME/artifacts``."""
    return cache.home() / "artifacts"


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def fingerprint(
    stage: str,
    version: int,
    parents: Sequence[str],
    params: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> str:
    """Fingerprint of an artifact: 16 hex digits.

    Args:
        stage: the stage name (``"experts"``).
        version: the stage's version; bump it when its output changes meaning.
        parents: fingerprints of everything it reads (order matters).
        params: its parameters; those equal to ``defaults[key]`` are left out.
        defaults: the stage's defaults as frozen with ``version`` (a literal snapshot);
            compared after canonicalization (tuples as lists, paths as strings).
    """
    given, frozen = _canonical(params), _canonical(defaults)
    changed = {k: v for k, v in given.items() if k not in frozen or frozen[k] != v}
    payload = json.dumps([stage, version, list(parents), changed], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def path_of(stage: str, name: str, fp: str, *, root: Path | None = None) -> Path:
    """Where the artifact would live (it may not exist)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return (root or default_root()) / stage / f"{safe}-{fp}"


def find(stage: str, name: str, fp: str, *, root: Path | None = None) -> Path | None:
    """The artifact's directory if it is complete and intact, else ``None``.

    A damaged one (:func:`verify`) is removed, with a note on stderr, so that its stage
    computes it again.
    """
    return intact(path_of(stage, name, fp, root=root))


def intact(path: Path) -> Path | None:
    """``path`` if it is a finished artifact whose files match its manifest; a damaged
    one is removed (with a note) and ``None`` returned."""
    if not (path / MANIFEST).is_file():
        return None
    problem = verify(path)
    if problem is None:
        return path
    print(f"artifacts: {path} is damaged ({problem}); computing it again", file=sys.stderr,
          flush=True)
    aside = path.parent / f".{path.name}.damaged-{os.getpid()}.{atomic.host_tag()}"
    try:
        os.replace(path, aside)  # atomic: a concurrent reader sees it whole or not at all
    except OSError:
        return None
    shutil.rmtree(aside, ignore_errors=True)
    return None


def digests(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``folder`` but the manifest, by relative path."""
    out = {}
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.name != MANIFEST:
            h = hashlib.sha256()
            with open(file, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            out[file.relative_to(folder).as_posix()] = {"sha256": h.hexdigest(),
                                                        "bytes": file.stat().st_size}
    return out


def verify(path: Path) -> str | None:
    """What is wrong with a finished artifact, or ``None`` when its files match its manifest.

    Artifacts written before manifests held checksums (no ``files``) are taken as they are.
    """
    manifest_path = path / MANIFEST
    try:
        stat = manifest_path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        if _verified.get(path) == key:
            return None
        data = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"unreadable {MANIFEST}: {type(err).__name__}"
    if not isinstance(data, dict):
        return f"{MANIFEST} is not a JSON object"
    files = data.get("files")
    if files is None:
        return None
    if not isinstance(files, dict):
        return f"{MANIFEST} has no valid file list"
    for rel, want in files.items():
        file = path / rel
        if not file.is_file():
            return f"{rel} is missing"
        if file.stat().st_size != want.get("bytes"):
            return f"{rel} has {file.stat().st_size} bytes, the manifest says {want.get('bytes')}"
        h = hashlib.sha256()
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        if h.hexdigest() != want.get("sha256"):
            return f"{rel} does not match its checksum"
    _verified[path] = key
    return None


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a finished artifact directory.

    Raises:
        DataError: the directory is unfinished or its manifest is unreadable.
    """
    try:
        data = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError as err:
        raise DataError(
            f"{path} is not a finished artifact (no {MANIFEST}); rerun its stage"
        ) from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path / MANIFEST} is corrupt ({err}); delete {path} and rerun") from err
    if not isinstance(data, dict):
        raise DataError(f"{path / MANIFEST} is not a JSON object; delete {path} and rerun")
    return data


@contextmanager
def write(
    stage: str, name: str, fp: str, manifest: dict[str, Any], *, root: Path | None = None
) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success add the manifest and rename into place.

    The caller may add keys to ``manifest`` inside the ``with`` block. If the block
    raises, the temporary directory is removed and nothing appears at the final path.
    """
    final = path_of(stage, name, fp, root=root)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep(final)
    tmp = Path(tempfile.mkdtemp(prefix=atomic.partial_prefix(final), dir=final.parent))
    try:
        yield tmp
        manifest.setdefault("stage", stage)
        manifest.setdefault("name", name)
        manifest.setdefault("fingerprint", fp)
        manifest["files"] = digests(tmp)
        (tmp / MANIFEST).write_text(json.dumps(_canonical(manifest), indent=1, default=str))
        if final.exists():  # an unfinished leftover (no manifest) or a concurrent winner
            if (final / MANIFEST).is_file():
                return
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _sweep(final: Path) -> None:
    """Remove temporary directories left by killed writers of this artifact.

    Without the artifact's claim, only those of dead processes of this machine (another
    machine's process cannot be asked whether it lives); with it, every one: a writer
    holds the claim while it writes, so the others' leftovers are dead writers'.
    """
    here = atomic.host_tag()
    held = final in _held
    for leftover in final.parent.glob(f".{final.name}.partial-*"):
        owner = leftover.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        pid, _, host = owner.partition(".")
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if held or ((host or here) == here and not _alive(int(pid))):
            shutil.rmtree(leftover, ignore_errors=True)


def _lock_of(final: Path) -> Path:
    return final.parent / f".{final.name}.lock"


@contextmanager
def claim(stage: str, name: str, fp: str, *, root: Path | None = None,
          stream: Any = None) -> Iterator[None]:
    """Hold the artifact's lock for the block: "find it, else compute and write it".

    Blocks while another live process holds it (printing one line when the wait
    starts), takes over a stale lock (see the module docstring), and re-enters freely
    when this process already holds it.
    """
    with locked(path_of(stage, name, fp, root=root), stream=stream):
        yield


@contextmanager
def locked(final: Path, *, stream: Any = None) -> Iterator[None]:
    """:func:`claim` for any path (a shard inside a work directory, say)."""
    if final in _held:
        yield
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_of(final)
    me = json.dumps({"host": atomic.host_tag(), "pid": os.getpid(), "since": time.time()})
    seen: tuple[str, float, float] | None = None  # (holder, its mtime, when we saw it move)
    told = False
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder, mtime = lock.read_text(), lock.stat().st_mtime
            except (FileNotFoundError, UnicodeDecodeError):
                continue  # released (or half-written) between our two looks: try again
            now = time.monotonic()
            if seen is None or seen[0] != holder or seen[1] != mtime:
                seen = (holder, mtime, now)
            if _stale_holder(holder) or now - seen[2] > STALE:
                if lock.read_text() == holder:  # still the one judged stale
                    lock.unlink(missing_ok=True)
                continue
            if not told:
                print(f"artifacts: waiting for {_describe(holder)}, which is computing "
                      f"{final.name}", file=stream or sys.stderr, flush=True)
                told = True
            time.sleep(POLL)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    _held.add(final)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT):
            try:
                os.utime(lock)
            except FileNotFoundError:
                return

    heart = threading.Thread(target=beat, daemon=True)
    heart.start()
    try:
        yield
    finally:
        stop.set()
        heart.join()
        _held.discard(final)
        try:
            if lock.read_text() == me:
                lock.unlink()
        except FileNotFoundError:
            pass


def _stale_holder(holder: str) -> bool:
    """A lock of a dead process on this machine (another machine's: by its heartbeat)."""
    try:
        info = json.loads(holder)
        host, pid = str(info["host"]), int(info["pid"])
    except (ValueError, KeyError, TypeError):
        return False  # half-written: its writer is alive a moment ago
    return host == atomic.host_tag() and pid != os.getpid() and not _alive(pid)


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"process {info['pid']} on {info['host']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def work_dir(stage: str, name: str, fp: str, *, root: Path | None = None) -> Path:
    """A persistent scratch directory for resumable work on this artifact (created)."""
    final = path_of(stage, name, fp, root=root)
    path = final.parent / f".{final.name}.work"
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_work_dir(stage: str, name: str, fp: str, *, root: Path | None = None) -> None:
    """Delete the scratch directory once the artifact is finished."""
    final = path_of(stage, name, fp, root=root)
    shutil.rmtree(final.parent / f".{final.name}.work", ignore_errors=True)


#: What a stage computes into an artifact: fill the temporary directory it is given
#: and return the manifest's entries (the writer adds stage, name, fingerprint, files).
Compute = Callable[[Path], Mapping[str, Any]]


def ensure(stage: str, name: str, fp: str, compute: Compute, *, root: Path | None = None,
           stream: Any = None, finder: Callable[[], Path | None] | None = None
           ) -> tuple[Path, bool]:
    """The one path of every stage artifact: find it, else claim it, look again (another
    process may have written it meanwhile), compute it into a temporary directory, add the
    checksummed manifest, rename it into place, drop its work directory, and open it.

    ``finder`` replaces the lookup where one artifact answers several names (the
    evaluation's coinciding mixtures share a training).

    Returns:
        ``(path, computed)``: the finished artifact, and whether this call computed it.
    """
    def look() -> Path | None:
        return finder() if finder is not None else find(stage, name, fp, root=root)

    found = look()
    if found is not None:
        return found, False
    with claim(stage, name, fp, root=root, stream=stream):
        found = look()
        if found is not None:
            return found, False
        manifest: dict[str, Any] = {}
        with write(stage, name, fp, manifest, root=root) as tmp:
            manifest.update(compute(tmp))
        remove_work_dir(stage, name, fp, root=root)
        found = find(stage, name, fp, root=root)
    if found is None:  # written and gone at once: another process removed it as damaged
        raise DataError(f"the {stage} artifact {name}-{fp} vanished right after it was "
                        "written; check the cache's disk and rerun")
    return found, True
