"""A fuzzing campaign against the CLI's own entry points: task files and run configs.

    python tests/fuzz/campaign.py --tasks 10000 --configs 3000     # make fuzz
    python tests/fuzz/campaign.py --tasks 200 --configs 60 --seed 1  # the make-test sample

Inputs are valid task files of every format (JSONL, JSON, CSV, collection YAML,
Parquet) and valid run configs, mutated (bytes flipped, inserted, cut; values replaced
by odd JSON/YAML: nulls, nesting, huge numbers, NaN, lone surrogates, control
characters; keys dropped, doubled or misspelled; tables with odd column types). Each
input goes, in a worker subprocess, through ``taskpgm tasks validate FILE`` (tasks) or
``taskpgm.config.load`` (what ``taskpgm run`` calls first). An outcome is:

* loaded: exit 0;
* clear error: a TaskPGMError (exit 1 and an ``error:`` line, no traceback);
* other exception: anything else escaping the entry point (a bug);
* crash: the worker process died (segmentation fault, abort) — the campaign counts it,
  starts a new worker and goes on.

Everything is deterministic from ``--seed``. The table it prints is the one in
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

OUTCOMES = ("loaded", "clear error", "other exception", "crash")

# ------------------------------------------------------------------ valid inputs

def records(rng: random.Random, n: int = 30) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        if rng.random() < 0.5:
            out.append({"prompt": f"Question {i}: is {rng.randint(0, 99)} even?",
                        "choices": ["yes", "no", "maybe"][: rng.randint(2, 3)],
                        "answer": rng.randint(0, 1)})
        else:
            out.append({"prompt": f"{i} + {rng.randint(0, 9)} =", "target": str(i)})
    kind = rng.choice(["mc", "gen"])
    return [r for r in out if ("choices" in r) == (kind == "mc")] or out[:1]


ODD_VALUES: list[Any] = [None, True, 0, -1, 10**30, 1.5, float("nan"), float("inf"), "", " ",
                         "\x00", "\ud800", "\x1b[31m", "é" * 3, "a" * 5000, [], [None],
                         [None, "b"], ["a", None], [[["x"]]], {}, {"a": {"b": [1]}},
                         [1, 2], ["a", "a"], "\u202e", "\r\n"]


def mutate_record(rng: random.Random, rec: dict[str, Any]) -> dict[str, Any]:
    rec = dict(rec)
    op = rng.random()
    keys = list(rec) or ["prompt"]
    if op < 0.4:
        rec[rng.choice(keys)] = rng.choice(ODD_VALUES)
    elif op < 0.55:
        rec.pop(rng.choice(keys), None)
    elif op < 0.7:
        rec[rng.choice(["promt", "answer", "target", "choices", "x"])] = rng.choice(ODD_VALUES)
    elif op < 0.85:
        depth = rng.choice([5, 200])  # deeper nesting is written as text (mutate_bytes)
        rec[rng.choice(keys)] = json.loads("[" * depth + "]" * depth)
    else:
        rec["choices"] = [rng.choice(["a", "b", None, 1]) for _ in range(rng.randint(0, 4))]
    return rec


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if not data:
            data += bytes([rng.randrange(256)])
            continue
        at = rng.randrange(len(data))
        if op < 0.3:
            data[at] = rng.randrange(256)
        elif op < 0.5:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op < 0.65:
            del data[at: at + rng.randint(1, 64)]
        elif op < 0.8:
            data = data[:at]
        elif op < 0.9:
            data[at:at] = rng.choice([b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"\r", b'"',
                                      b"\\ud800", b"[[[[[[", b"\n\n", b",", b"[" * 50_000,
                                      b"{" * 3000])
        else:
            line_end = data.find(b"\n", at)
            data[at:at] = data[at: line_end if line_end > at else at + 20]
    return bytes(data)


def task_file(rng: random.Random, folder: Path, i: int) -> Path:
    """One (possibly mutated) task file of a random format."""
    fmt = rng.choice(["jsonl", "jsonl", "json", "csv", "yaml", "parquet"])
    recs = records(rng)
    structural = rng.random() < 0.5
    if structural:
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(recs))
            recs[k] = mutate_record(rng, recs[k])
    path = folder / f"t{i}.{fmt}"
    if fmt == "jsonl":
        data = "".join(json.dumps(r, allow_nan=True) + "\n" for r in recs).encode()
    elif fmt == "json":
        data = json.dumps(rng.choice([recs, {"examples": recs}]), allow_nan=True).encode()
    elif fmt == "csv":
        data = csv_bytes(rng, recs)
    elif fmt == "yaml":
        inner = folder / f"t{i}-inner.jsonl"
        inner.write_bytes("".join(json.dumps(r, allow_nan=True) + "\n" for r in recs).encode())
        data = yaml_collection(rng, inner)
    else:
        return parquet_file(rng, recs, path, mutate=not structural)
    if not structural or rng.random() < 0.3:
        data = mutate_bytes(rng, data)
    path.write_bytes(data)
    return path


def csv_bytes(rng: random.Random, recs: list[dict[str, Any]]) -> bytes:
    import csv

    buf = io.StringIO()
    cols = sorted({k for r in recs for k in r})
    writer = csv.writer(buf)
    writer.writerow(cols)
    for r in recs:
        row = []
        for c in cols:
            v = r.get(c, "")
            row.append(json.dumps(v) if isinstance(v, (list, dict)) else v)
        writer.writerow(row)
    return buf.getvalue().encode("utf-8", "surrogatepass")


def yaml_collection(rng: random.Random, inner: Path) -> bytes:
    entry = {"spec": str(inner)}
    if rng.random() < 0.3:
        entry["template"] = rng.choice(["{prompt} {nothere}", "Q: {prompt}", "{", "{{prompt}}"])
    if rng.random() < 0.2:
        entry["mapping"] = {"prompt": rng.choice(["prompt", "text", ""])}
    probe = rng.choice([1, 5, 0.2, -1])
    text = f"splits: {{probe: {probe}, eval: 5}}\ntasks:\n  - {json.dumps(entry)}\n"
    if rng.random() < 0.2:
        text += "tasks: []\n"  # a duplicate key
    if rng.random() < 0.1:
        text = "a: &a [" + ",".join(["*a"] * 1) + "]\n" + text
    return text.encode()


def parquet_file(rng: random.Random, recs: list[dict[str, Any]], path: Path,
                 mutate: bool) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {}
    for key in sorted({k for r in recs for k in r}):
        values = [r.get(key) for r in recs]
        if rng.random() < 0.2:  # odd column types
            values = [rng.choice([None, 1, "x"]) if isinstance(v, str) else v for v in values]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError,
                RecursionError):
            columns[key] = pa.array([json.dumps(v, allow_nan=True) for v in values])  # ascii
    try:
        pq.write_table(pa.table(columns), path)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # a type Parquet cannot hold
        text = {k: pa.array([str(v) for v in c.to_pylist()]) for k, c in columns.items()}
        pq.write_table(pa.table(text), path)
    if mutate:
        path.write_bytes(mutate_bytes(rng, path.read_bytes()))
    return path


VALID_CONFIG = {
    "base": {"model": "smollm2-135m", "trust_remote_code": False},
    "tasks": {"names": ["bigbench:navigate", "bigbench:hyperbaton"],
              "splits": {"probe": 20, "eval": 20, "max_train": 200}},
    "experts": {"lr": 0.003, "steps": 30, "batch_size": 8},
    "signals": {"batch_size": 16},
    "relations": {"alpha": 0.5},
    "mrf": {"rho": 0.0, "untrusted": "exclude", "energy": "affinity"},
    "mixture": {"token_budget": 12000},
    "evaluation": {"seeds": [0, 1], "baselines": ["uniform", "size"], "test_share": 0.5},
    "report": {"enabled": True},
    "tracking": {"report_to": "none"},
}


def config_file(rng: random.Random, folder: Path, i: int) -> Path:
    import copy

    import yaml

    cfg: dict[str, Any] = copy.deepcopy(VALID_CONFIG)
    for _ in range(rng.randint(1, 3)):
        section = rng.choice(list(cfg))
        node = cfg[section]
        op = rng.random()
        if isinstance(node, dict) and node and op < 0.45:
            key = rng.choice(list(node))
            node[key] = rng.choice([*ODD_VALUES, -5, 0.0, "auto", "yes", ["a"], "a\x00b"])
        elif isinstance(node, dict) and node and op < 0.6:
            node.pop(rng.choice(list(node)))
        elif op < 0.75:
            cfg[section] = rng.choice([*ODD_VALUES, [1, 2], "text"])
        elif op < 0.85:
            cfg[rng.choice(["mrff", "output_dir", "extra"])] = rng.choice(ODD_VALUES)
        else:
            cfg.pop(section)
    try:
        text = yaml.safe_dump(cfg, allow_unicode=rng.random() < 0.5)
    except (yaml.YAMLError, UnicodeEncodeError):
        text = json.dumps(cfg, default=str)
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.35:
        data = mutate_bytes(rng, data)
    if rng.random() < 0.05:
        data = b"a:\n" + b"".join(b"  " * (k + 1) + b"b:\n" for k in range(rng.choice([50, 2000])))
    if rng.random() < 0.05:
        data += b"\nmrf: {budget: 2}\n"  # a duplicate section
    path = folder / f"c{i}.yaml"
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ the worker

def worker(kind: str) -> int:
    """Read case paths from stdin; print 'start i' before and 'done i OUTCOME' after each."""
    os.environ.setdefault("TASKPGM_HOME", tempfile.mkdtemp(prefix="taskpgm-fuzz-home-"))
    from taskpgm import config as config_mod
    from taskpgm.cli import main
    from taskpgm.errors import TaskPGMError

    for line in sys.stdin:
        i, path = line.rstrip("\n").split("\t", 1)
        print(f"start {i}", flush=True)
        if path.endswith(".selftest-crash"):  # the campaign's own test of crash counting
            os.abort()
        detail = ""
        try:
            if kind == "tasks":
                err = io.StringIO()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    code = main(["tasks", "validate", path])
                text = err.getvalue()
                if code == 0:
                    outcome = "loaded"
                elif code == 1 and "Traceback" not in text and "error: " in text:
                    outcome = "clear error"
                else:
                    outcome, detail = "other exception", f"exit {code}: {text[-300:]}"
            else:
                try:
                    config_mod.load(path)
                    outcome = "loaded"
                except TaskPGMError:
                    outcome = "clear error"
        except Exception as exc:
            outcome, detail = "other exception", f"{type(exc).__name__}: {str(exc)[:200]}"
        print(f"done {i} {json.dumps([outcome, detail])}", flush=True)
    return 0


# ------------------------------------------------------------------ the parent

def run_cases(kind: str, paths: list[Path], log: list[dict[str, Any]],
              timeout: float = 30.0) -> Counter[str]:
    """Feed the cases to worker subprocesses; a worker that dies or hangs past ``timeout``
    seconds on one case is counted against that case and replaced."""
    import queue
    import threading

    counts: Counter[str] = Counter()
    todo = list(enumerate(paths))
    while todo:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", kind],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(out: Any = proc.stdout, sink: queue.Queue[str | None] = lines) -> None:
            for line in out:
                sink.put(line)
            sink.put(None)

        threading.Thread(target=pump, daemon=True).start()
        for i, p in todo:
            proc.stdin.write(f"{i}\t{p}\n")
        proc.stdin.close()
        current, finished, hung = None, set(), False
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                hung = True
                proc.kill()
                break
            if line is None:
                break
            word, _, rest = line.rstrip("\n").partition(" ")
            if word == "start":
                current = int(rest)
            elif word == "done":
                i, _, payload = rest.partition(" ")
                outcome, detail = json.loads(payload)
                counts[outcome] += 1
                finished.add(int(i))
                if outcome == "other exception":
                    log.append({"kind": kind, "case": str(paths[int(i)]), "detail": detail})
                current = None
        code = proc.wait()
        if current is not None:  # the worker died (or hung) inside this case
            outcome = "other exception" if hung else "crash"
            counts[outcome] += 1
            finished.add(current)
            log.append({"kind": kind, "case": str(paths[current]),
                        "detail": f"no answer in {timeout:.0f} s" if hung else f"exit {code}"})
        todo = [(i, p) for i, p in todo if i not in finished]
    return counts


def campaign(n_tasks: int, n_configs: int, seed: int, keep: Path | None = None
             ) -> tuple[dict[str, Counter[str]], list[dict[str, Any]], float]:
    rng = random.Random(seed)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="taskpgm-fuzz-") as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        tasks = [task_file(rng, folder, i) for i in range(n_tasks)]
        configs = [config_file(rng, folder, i) for i in range(n_configs)]
        log: list[dict[str, Any]] = []
        counts = {"task files": run_cases("tasks", tasks, log),
                  "run configs": run_cases("configs", configs, log)}
    return counts, log, time.monotonic() - t0


def table(counts: dict[str, Counter[str]]) -> str:
    lines = ["| campaign | inputs | " + " | ".join(OUTCOMES) + " |",
             "|---|---|" + "---|" * len(OUTCOMES)]
    for name, c in counts.items():
        lines.append(f"| {name} | {sum(c.values()):,} | "
                     + " | ".join(f"{c.get(o, 0):,}" for o in OUTCOMES) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--configs", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["tasks", "configs"], help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, default=None, help="keep the inputs here")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    counts, log, seconds = campaign(args.tasks, args.configs, args.seed, args.keep)
    print(table(counts))
    print(f"\n{seconds:.0f} s, seed {args.seed}")
    for entry in log[:20]:
        print(f"{entry['kind']}: {entry['case']}: {entry['detail']}")
    bad = sum(c.get("other exception", 0) + c.get("crash", 0) for c in counts.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
