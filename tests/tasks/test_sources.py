"""BIG-bench and MMLU loaders on small stand-ins in a temporary cache (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskpgm.cli import main
from taskpgm.errors import ConfigError
from taskpgm.tasks import load_collection, load_task


def test_bigbench_prefixes_and_kind(fake_sources: Path):
    t = load_task("bigbench:sports_understanding", max_train=None)
    assert t.name == "sports_understanding" and t.kind == "mc" and t.examples == 400
    e = t.probe[0]
    i = int(e.prompt.split("Player ")[1].split()[0])
    assert e.prompt == ("Determine whether plausible:\nStatement: Player "
                        f"{i} scored\nPlausible/implausible? ")
    assert e.choices == ("plausible", "implausible") and e.correct == ((0,) if i % 2 else (1,))


def test_bigbench_subtasks_and_default_prefixes(fake_sources: Path):
    whole = load_task("bigbench:arithmetic", probe=3, eval=3, max_train=None)
    assert whole.name == "arithmetic" and whole.examples == 30
    one = load_task("bigbench:arithmetic/1_digit_addition", probe=2, eval=2, max_train=None)
    assert one.name == "arithmetic.1_digit_addition" and one.examples == 10
    e = one.probe[0]
    # BIG-bench defaults: "\nQ: " input prefix, choices appended, "\nA: " output prefix.
    assert e.prompt.startswith("Q: What is ") and "\n  choice: banana" in e.prompt
    assert e.prompt.endswith("\nA: ")
    assert len(one.train) + 4 + one.duplicates_dropped == one.examples


def test_bigbench_multiple_correct_and_generative(fake_sources: Path):
    story = load_task("bigbench:storycloze", probe=2, eval=2)
    ex = story.probe[0]
    assert sorted(ex.choices[i] for i in ex.correct) == ["a", "b"]  # both top-scoring choices
    assert ex.answer_text == ex.choices[ex.correct[0]]


def test_bigbench_choices_are_shuffled_stably(fake_sources: Path):
    from taskpgm.tasks.bigbench import choice_order

    story = load_task("bigbench:storycloze", probe=2, eval=2, max_train=None)
    examples = (*story.train, *story.probe, *story.eval)
    # file order is a, b, c with c wrong; shuffled, the wrong one is not always last
    assert {ex.choices.index("c") for ex in examples} != {2}
    for ex in examples:
        listed = ex.prompt.split("choice: ")[1:]
        assert [c.split("\n")[0] for c in listed] == list(ex.choices)  # prompt lists that order
    assert choice_order("x", ["1", "2", "3"]) == choice_order("x", ["1", "2", "3"])
    gen = load_task("bigbench:word_sorting_gen", probe=2, eval=2)
    assert gen.kind == "gen" and len(gen.probe[0].targets) == 2


def test_bigbench_mixed_kinds_read_as_generative(fake_sources: Path, capsys):
    t = load_task("bigbench:mixed_kinds", probe=1, eval=1, max_train=None)
    assert t.kind == "gen" and t.examples == 10 and len(t.train) == 8
    by_prompt = {e.prompt: e for e in (*t.train, *t.probe, *t.eval)}
    assert by_prompt["Q: m0\n  choice: yes\n  choice: no\nA: "].targets == ("yes",)
    assert "note: bigbench:mixed_kinds is read as a generative task: " \
           "mixed_kinds/b_gen/task.json example 0 is generative" in capsys.readouterr().err
    assert load_task("bigbench:mixed_kinds/a_mc", probe=1, eval=1).kind == "mc"


def test_mmlu_skips_headers_and_dedupes_choices(fake_sources: Path):
    anatomy = load_task("mmlu:anatomy", probe=5, eval=5, max_train=None)
    assert anatomy.name == "mmlu.anatomy" and anatomy.examples == 30
    assert all(e.prompt != "question\nAnswer:" for e in anatomy.train)
    astro = load_task("mmlu:astronomy", probe=5, eval=5)
    e = astro.probe[0]
    assert e.choices == ("x", "y", "z") and e.answer_text == "x"


def test_mmlu_star_expands(fake_sources: Path):
    tasks = load_collection(["mmlu:*"], probe=2, eval=2)
    assert [t.name for t in tasks] == ["mmlu.anatomy", "mmlu.astronomy"]
    with pytest.raises(ConfigError, match="use load_collection"):
        load_task("mmlu:*")


def test_show_json_has_exactly_the_documented_keys(fake_sources: Path, capsys):
    code = main(["tasks", "show", "bigbench:sports_understanding", "mmlu:anatomy",
                 "bigbench:arithmetic/1_digit_addition", "--json", "--max-train", "all"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 3
    for line in out:
        info = json.loads(line)
        assert set(info) == {"task", "kind", "examples", "duplicates_dropped", "leaked_dropped",
                             "splits", "median_prompt_chars", "median_choices"}
        s = info["splits"]
        assert s["train"] + s["probe"] + s["eval"] + info["duplicates_dropped"] \
            + info["leaked_dropped"] == info["examples"]


def test_list_mmlu(fake_sources: Path, capsys):
    assert main(["tasks", "list", "mmlu", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows == [{"spec": "mmlu:anatomy", "kind": "mc", "examples": 30},
                    {"spec": "mmlu:astronomy", "kind": "mc", "examples": 20}]


def test_progress_for_long_loads(tmp_path: Path, home: Path, capsys, monkeypatch):
    from taskpgm.tasks import loadprogress

    orig = loadprogress.LoadProgress.__init__

    def quick(self, task, *, after=0.0):  # print from the first update on
        orig(self, task, after=after)

    monkeypatch.setattr(loadprogress.LoadProgress, "__init__", quick)
    from .conftest import mc_records, write_jsonl

    load_task(str(write_jsonl(tmp_path / "t.jsonl", mc_records(400))))
    assert "load t: 400" in capsys.readouterr().err


#: Three BIG-bench tasks: one multiple choice, one with two generative subtasks, one
#: programmatic; the files of both the tiny archive and the tiny checkout.
TINY_DOCS: dict[str, object] = {
    "alpha/task.json": {"examples": [{"input": f"a{i}", "target_scores": {"x": 1, "y": 0}}
                                     for i in range(7)]},
    "beta/task.json": {"name": "beta"},
    "beta/one/task.json": {"examples": [{"input": f"b{i}", "target": "t"} for i in range(5)]},
    "beta/two/task.json": {"examples": [{"input": f"c{i}", "target": "t"} for i in range(4)]},
    "gamma/task.py": "print('programmatic')",
    "gamma/README.md": "hi",
}


@pytest.fixture
def tiny_checkout(tmp_path: Path) -> Path:
    """A clone of BIG-bench holding the tiny archive's task files (and a folder of its own)."""
    clone = tmp_path / "BIG-bench"
    tasks = clone / "bigbench" / "benchmark_tasks"
    for rel, doc in {**TINY_DOCS, "_private/task.json": {"examples": []}}.items():
        (tasks / rel).parent.mkdir(parents=True, exist_ok=True)
        (tasks / rel).write_text(doc if isinstance(doc, str) else json.dumps(doc))
    (tasks / "README.md").write_text("the tasks")
    return clone


@pytest.fixture
def tiny_archive(home: Path) -> Path:
    """A bigbench-1.0.0.tar.gz with three tasks, where the real one would be cached."""
    import io
    import tarfile

    from taskpgm.tasks.bigbench import PREFIX

    folder = home / "downloads" / "bigbench==1.0.0"
    folder.mkdir(parents=True)
    path = folder / "bigbench-1.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, doc in TINY_DOCS.items():
            data = (doc if isinstance(doc, str) else json.dumps(doc)).encode()
            info = tarfile.TarInfo(PREFIX + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_index_extract_and_list(tiny_archive: Path, home: Path, capsys):
    assert main(["tasks", "list", "bigbench", "--json"]) == 0
    rows = {r["spec"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["bigbench:alpha"] == {"spec": "bigbench:alpha", "kind": "mc", "examples": 7}
    assert rows["bigbench:beta"]["examples"] == 9 and rows["bigbench:beta/two"]["examples"] == 4
    assert rows["bigbench:gamma"]["kind"] == "programmatic"
    t = load_task("bigbench:beta", probe=1, eval=1, max_train=None)
    assert t.kind == "gen" and t.examples == 9
    extracted = sorted(p.relative_to(home / "bigbench-1.0.0" / "tasks").as_posix()
                       for p in (home / "bigbench-1.0.0" / "tasks").rglob("*") if p.is_file())
    assert extracted == ["beta/one/task.json", "beta/task.json", "beta/two/task.json"]


def _bigbench_seen(capsys) -> tuple[list[dict[str, object]], dict[str, str]]:
    """What a user sees of BIG-bench: the catalog, and each task's split contents."""
    from taskpgm.tasks.schema import examples_fingerprint

    assert main(["tasks", "list", "bigbench", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    splits = {}
    for spec in ("bigbench:alpha", "bigbench:beta", "bigbench:beta/two"):
        t = load_task(spec, probe=1, eval=2, max_train=None)
        splits[spec] = examples_fingerprint(t.train + t.probe + t.eval)
    return rows, splits


def test_a_checkout_is_read_in_place_as_the_archive_is_read(
        tiny_archive: Path, tiny_checkout: Path, home: Path, monkeypatch, capsys):
    """$TASKPGM_BIGBENCH names a clone: the same catalog and the same examples as the archive
    with the same files, nothing extracted or downloaded, and its catalog cached under a name
    that changes when a task file does."""
    from taskpgm.tasks.bigbench import CHECKOUT_ENV, folder

    from_archive = _bigbench_seen(capsys)
    assert (home / "bigbench-1.0.0" / "tasks" / "alpha").is_dir()
    tiny_archive.unlink()  # the checkout must not need it
    for where in (tiny_checkout, tiny_checkout / "bigbench",
                  tiny_checkout / "bigbench" / "benchmark_tasks"):
        monkeypatch.setenv(CHECKOUT_ENV, str(where))
        assert _bigbench_seen(capsys) == from_archive
    assert not (home / "downloads" / "bigbench==1.0.0").exists() or \
        not any((home / "downloads" / "bigbench==1.0.0").iterdir())
    catalogs = sorted(folder().glob("catalog-*.json"))
    assert len(catalogs) == 1 and folder().parent.name == "bigbench-checkout"
    alpha = tiny_checkout / "bigbench" / "benchmark_tasks" / "alpha" / "task.json"
    alpha.write_text(json.dumps({"examples": [{"input": f"a{i}", "target_scores": {"x": 1, "y": 0}}
                                              for i in range(9)]}))
    rows, _ = _bigbench_seen(capsys)
    assert {"spec": "bigbench:alpha", "kind": "mc", "examples": 9} in rows
    assert len(sorted(folder().glob("catalog-*.json"))) == 2


def test_a_broken_task_file_in_a_checkout_is_a_clear_error(tiny_checkout: Path, home: Path,
                                                           monkeypatch, capsys):
    from taskpgm.tasks.bigbench import CHECKOUT_ENV

    monkeypatch.setenv(CHECKOUT_ENV, str(tiny_checkout))
    broken = tiny_checkout / "bigbench" / "benchmark_tasks" / "alpha" / "task.json"
    broken.write_text('{"examples": [')
    for argv in (["tasks", "show", "bigbench:alpha"], ["tasks", "list", "bigbench"]):
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert f"{broken} is not valid JSON" in err and "Traceback" not in err, argv


def test_a_checkout_that_holds_no_tasks_is_a_clear_error(home: Path, tmp_path: Path,
                                                         monkeypatch, capsys):
    from taskpgm.errors import NotFoundError
    from taskpgm.tasks.bigbench import CHECKOUT_ENV

    monkeypatch.setenv(CHECKOUT_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(NotFoundError) as got:
        load_task("bigbench:alpha")
    assert str(got.value).startswith(f"TASKPGM_BIGBENCH={tmp_path / 'nowhere'} holds no "
                                     "BIG-bench tasks")
    assert "a clone of https://github.com/google/BIG-bench" in str(got.value)
    assert main(["tasks", "show", "bigbench:alpha"]) != 0
    err = capsys.readouterr().err
    assert "holds no BIG-bench tasks" in err and "Traceback" not in err


def test_an_archive_the_index_does_not_serve_names_both_ways_round(home: Path, monkeypatch):
    """The index's refusal keeps its words (the demo's fallback reads them) and adds the
    two ways round it: the file put by hand, or a checkout."""
    from taskpgm import cache
    from taskpgm.errors import NotFoundError
    from taskpgm.tasks import bigbench

    class Index:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, *_):
            return json.dumps({"files": [{"filename": "bigbench-0.0.1.tar.gz"}]}).encode()

    monkeypatch.setattr(cache.urllib.request, "urlopen", lambda request, timeout: Index())
    with pytest.raises(NotFoundError) as got:
        bigbench.archive()
    msg = str(got.value)
    assert cache.NOT_SERVED in msg and "downloads/bigbench==1.0.0/" in msg
    assert msg.endswith("set TASKPGM_BIGBENCH to a clone of https://github.com/google/BIG-bench "
                        "(taskpgm then reads its task.json files in place)")
