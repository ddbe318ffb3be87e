from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taskpgm.tasks import load_collection, load_task
from taskpgm.tasks.formatting import canonical, example_id, hash64, id_low, rest

from .conftest import mc_records, write_jsonl


def _signature(t):
    return [(e.id, e.prompt, e.choices, e.correct, e.targets) for e in (*t.probe, *t.eval,
                                                                         *t.train)]


def test_every_format_gives_the_same_examples(tmp_path: Path, home: Path):
    records = mc_records(400)
    jsonl = write_jsonl(tmp_path / "t.jsonl", records)
    (tmp_path / "t.json").write_text(json.dumps(records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "t.parquet")
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "choices", "answer"])
        for r in records:
            w.writerow([r["prompt"], json.dumps(r["choices"]), r["answer"]])
    import datasets

    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "t_ds"))
    ref = load_task(str(jsonl), name="t")
    for other in ("t.json", "t.parquet", "t.csv", "t_ds"):
        assert _signature(load_task(str(tmp_path / other), name="t")) == _signature(ref), other


def test_fast_and_record_paths_agree(tmp_path: Path, home: Path):
    """One odd record sends a chunk through the exact path; the examples must not change."""
    records = mc_records(400)
    fast = load_task(str(write_jsonl(tmp_path / "a.jsonl", records)), name="t")
    odd = [dict(r) for r in records]
    odd[7]["answer"] = [odd[7]["answer"]]  # a list of correct indices: record path only
    slow = load_task(str(write_jsonl(tmp_path / "b.jsonl", odd)), name="t")
    assert _signature(slow) == _signature(fast)


def test_id_is_the_documented_content_hash(tmp_path: Path, home: Path):
    """Recompute an id from the documented definition (formatting.py docstring)."""
    rows = [dict(r, ctx=f"x{i}") for i, r in enumerate(mc_records(400))]
    for template in (None, "{ctx}: {prompt}"):
        t = load_task(str(write_jsonl(tmp_path / "t.jsonl", rows)), template=template)
        for e in (t.probe[0], t.train[-1]):
            low = id_low(np.array([hash64(e.prompt)], dtype=np.uint64),
                         np.array([hash64(rest("t", e.choices, e.correct, ()))],
                                  dtype=np.uint64))[0]
            text = canonical("t", e.prompt, e.choices, e.correct, ())
            assert e.id == example_id(text, int(low))
            assert text == "t\x1e" + e.prompt + "\x1e" + "\x1f".join(e.choices or ()) \
                + "\x1e" + str(e.answer)


def test_mapping_template_and_generative(tmp_path: Path, home: Path):
    rows = [{"q": f"Q{i}", "opts": ["yes", "no"], "label": i % 2, "ctx": f"C{i}"}
            for i in range(50)]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    t = load_task(str(path), mapping={"prompt": "q", "choices": "opts", "answer": "label"},
                  template="{ctx}\nQuestion: {prompt}\nAnswer:", probe=5, eval=5)
    e = t.probe[0]
    i = int(e.prompt.split("\n")[0][1:])
    assert e.prompt == f"C{i}\nQuestion: Q{i}\nAnswer:" and e.answer == i % 2
    gen = write_jsonl(tmp_path / "g.jsonl", [{"prompt": f"p{i}", "target": f"t{i}"}
                                             for i in range(30)])
    g = load_task(str(gen), probe=5, eval=5)
    assert g.kind == "gen" and g.probe[0].targets[0] == "t" + g.probe[0].prompt[1:]
    multi = write_jsonl(tmp_path / "multi.jsonl",
                        [{"prompt": f"p{i}", "target": [f"a{i}", f"b{i}"]} for i in range(30)])
    assert load_task(str(multi), probe=5, eval=5).probe[0].targets[1].startswith("b")


def test_multiple_correct_answers_kept(tmp_path: Path, home: Path):
    rows = [{"prompt": f"p{i}", "choices": ["a", "b", "c"], "answer": [2, 0]} for i in range(20)]
    t = load_task(str(write_jsonl(tmp_path / "t.jsonl", rows)), probe=2, eval=2)
    assert t.probe[0].correct == (2, 0) and t.probe[0].answer_text == "c"


def test_choices_from_several_columns(tmp_path: Path, home: Path):
    path = tmp_path / "t.csv"
    path.write_text("question,A,B,label\n" + "".join(f"q{i},x{i},y{i},{i % 2}\n"
                                                      for i in range(20)))
    t = load_task(str(path), mapping={"prompt": "question", "choices": ["A", "B"],
                                      "answer": "label"}, probe=2, eval=2)
    assert t.kind == "mc" and t.probe[0].choices is not None and len(t.probe[0].choices) == 2


def test_max_examples_and_collection_file(tmp_path: Path, home: Path):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "a.jsonl", mc_records(100))
    write_jsonl(tmp_path / "data" / "b.jsonl", mc_records(100, prefix="B"))
    (tmp_path / "c.yaml").write_text(
        "splits: {probe: 10, eval: 10}\n"
        "tasks:\n"
        "  - data/a.jsonl\n"
        "  - name: bee\n"
        "    spec: data/b.jsonl\n"
        "    max_examples: 60\n")
    a, b = load_collection(tmp_path / "c.yaml", max_train=None)
    assert (a.name, b.name) == ("a", "bee")
    assert b.examples == 60 and len(b.train) == 40 and len(a.probe) == 10


def test_hf_spec_without_network_fails_clearly(home: Path, monkeypatch: pytest.MonkeyPatch):
    import datasets
    import huggingface_hub.constants

    from taskpgm.errors import NotFoundError

    # Offline, as in CI: the hub is not reachable, so fail at once instead of retrying.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(NotFoundError,
                       match="cannot load hf:nobody/nothing@train from the Hugging Face hub"):
        load_task("hf:nobody/nothing@train")


def test_default_task_names():
    from taskpgm.tasks.files import task_name_for

    assert task_name_for("data/my data.jsonl") == "my_data"
    assert task_name_for("hf:glue:sst2@validation") == "glue__sst2"
    assert task_name_for("saved/ds/") == "ds"
