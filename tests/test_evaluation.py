"""evaluation: the seed summary and its table by hand, and accuracy against a naive scorer."""

from __future__ import annotations

import math
import random

import pytest

import tiny_model
from taskpgm.config import SignalsConfig
from taskpgm.core.summary import markdown_table, summarize
from taskpgm.evaluation import accuracy_by_group
from taskpgm.inputs import EvalSet
from taskpgm.models import Base
from taskpgm.oracles import score_naive
from taskpgm.tasks.schema import Example
from taskpgm.tokens import encode

T_975 = {1: 12.706205, 2: 4.302653}  # Student-t 0.975 quantiles by degrees of freedom


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): mean ± t · sd / sqrt(s), sd with s - 1 in the denominator."""
    s = len(values)
    mean = sum(values) / s
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (s - 1))
    half = T_975[s - 1] * sd / math.sqrt(s)
    return mean, mean - half, mean + half


# Accuracy of every (method, seed, split, task), with n so unequal that an example-weighted
# split accuracy would differ from the per-task mean the docstring asks for.
N = {"a": 10, "b": 30, "h": 7}
ACC = {
    ("uniform", "eval"): {0: {"a": 0.50, "b": 0.70}, 1: {"a": 0.60, "b": 0.80},
                          2: {"a": 0.40, "b": 0.60}},
    ("uniform", "heldout"): {0: {"h": 0.30}, 1: {"h": 0.40}, 2: {"h": 0.50}},
    ("taskpgm", "eval"): {0: {"a": 0.60, "b": 0.90}, 1: {"a": 0.70, "b": 0.80},
                          2: {"a": 0.50, "b": 0.80}},
    ("taskpgm", "heldout"): {0: {"h": 0.35}, 1: {"h": 0.40}, 2: {"h": 0.60}},
    # seeds 0 and 1 only: its difference pairs with uniform's seeds 0 and 1
    ("size", "eval"): {0: {"a": 0.50, "b": 0.70}, 1: {"a": 0.70, "b": 0.90}},
    # the untrained base is scored once, as seed 0
    ("base", "eval"): {0: {"a": 0.20, "b": 0.40}},
    ("base", "heldout"): {0: {"h": 0.25}},
}


def hand_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {"method": m, "seed": s, "task": t, "split": split, "accuracy": acc, "n": N[t]}
        for (m, split), seeds in ACC.items() for s, tasks in seeds.items()
        for t, acc in tasks.items()]
    random.Random(0).shuffle(rows)  # the summary must not depend on the row order
    return rows


# Per (method, split): the split accuracy of each seed (mean over its tasks), by hand.
PER_SEED = {
    ("uniform", "eval"): {0: 0.60, 1: 0.70, 2: 0.50},
    ("uniform", "heldout"): {0: 0.30, 1: 0.40, 2: 0.50},
    ("taskpgm", "eval"): {0: 0.75, 1: 0.75, 2: 0.65},
    ("taskpgm", "heldout"): {0: 0.35, 1: 0.40, 2: 0.60},
    ("size", "eval"): {0: 0.60, 1: 0.80},
    ("base", "eval"): {0: 0.30},
    ("base", "heldout"): {0: 0.25},
}


def expected_summary(reference: str) -> dict[tuple[str, str], dict[str, float | int | None]]:
    out = {}
    for (method, split), seeds in PER_SEED.items():
        values = [seeds[s] for s in sorted(seeds)]
        if len(values) > 1:
            mean, lo, hi = t_interval(values)
        else:
            mean, lo, hi = values[0], math.nan, math.nan
        entry: dict[str, float | int | None] = {"seeds": len(values), "mean": mean, "lo": lo,
                                                "hi": hi}
        ref = PER_SEED.get((reference, split))
        if ref is not None and method != reference:
            diffs = [seeds[s] - ref[s] for s in sorted(set(seeds) & set(ref))]
            if len(diffs) > 1:
                d, dlo, dhi = t_interval(diffs)
            else:
                d, dlo, dhi = diffs[0], math.nan, math.nan
            entry.update(diff=d, diff_lo=dlo, diff_hi=dhi)
        out[(method, split)] = entry
    return out


def close(got: object, want: object, tol: float = 1e-6) -> bool:
    if want is None:
        return got is None
    assert isinstance(got, float) and isinstance(want, float)
    if math.isnan(want):
        return math.isnan(got)
    return abs(got - want) <= tol


def test_hand_values_are_what_the_comments_say() -> None:
    # uniform/eval: 0.6 ± 4.302653 · 0.1 / √3; taskpgm minus uniform: 0.15, 0.05, 0.15
    want = expected_summary("uniform")
    assert want[("uniform", "eval")]["hi"] == pytest.approx(0.6 + 0.2484138, abs=1e-6)
    assert want[("taskpgm", "eval")]["diff"] == pytest.approx(0.1166667, abs=1e-6)
    assert want[("taskpgm", "eval")]["diff_hi"] == pytest.approx(0.1166667 + 0.1434218,
                                                                 abs=1e-6)
    # size: two seeds, t_{0.975,1}; sd of (0.6, 0.8) is 0.1·√2, so the half-width is 1.27062
    assert want[("size", "eval")]["hi"] == pytest.approx(0.7 + 1.2706205, abs=1e-6)
    assert want[("size", "eval")]["diff"] == pytest.approx(0.05, abs=1e-12)


@pytest.mark.parametrize("reference", ["uniform", "taskpgm"])
def test_summarize_matches_the_hand_computed_intervals(reference: str) -> None:
    got = summarize(hand_rows(), reference=reference)
    want = expected_summary(reference)
    assert [(e["method"], e["split"]) for e in got] == sorted(want)
    for e in got:
        w = want[(e["method"], e["split"])]
        assert e["seeds"] == w["seeds"], e
        for key in ("mean", "lo", "hi", "diff", "diff_lo", "diff_hi"):
            assert close(e.get(key), w.get(key)), (e["method"], e["split"], key, e.get(key),
                                                  w.get(key))


def test_split_accuracy_is_the_unweighted_mean_over_tasks() -> None:
    # taskpgm eval seed 0: (0.6 + 0.9) / 2 = 0.75, not (10·0.6 + 30·0.9) / 40 = 0.825
    rows = [r for r in hand_rows() if r["method"] == "taskpgm" and r["split"] == "eval"
            and r["seed"] == 0]
    (entry,) = summarize(rows)
    assert entry["mean"] == pytest.approx(0.75, abs=1e-12)
    assert "diff" not in entry  # no uniform rows, no difference


def parse_markdown(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.strip().splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert set(lines[1].replace("|", "")) == {"-"}
    return cells[0], cells[2:]


def cell_value(text: str) -> float:
    return math.nan if text == "–" else float(text)


def test_markdown_table_shows_the_hand_computed_numbers() -> None:
    want = expected_summary("uniform")
    header, body = parse_markdown(markdown_table(summarize(hand_rows())))
    assert header == ["method", "split", "seeds", "accuracy", "95% CI", "minus uniform",
                      "95% CI"]
    assert len(body) == len(want)
    for method, split, seeds, acc, ci, diff, dci in body:
        w = want[(method, split)]
        assert int(seeds) == w["seeds"]
        lo, hi = ci.strip("[]").split(", ")
        if dci == "one seed: no interval":  # a difference over one paired seed (base)
            assert w["seeds"] == 1 or math.isnan(w["diff_lo"]), (method, split)
            dci = "[–, –]"
        dlo, dhi = dci.strip("[]").split(", ")
        for text, key in ((acc, "mean"), (lo, "lo"), (hi, "hi"), (diff, "diff"),
                          (dlo, "diff_lo"), (dhi, "diff_hi")):
            value = w.get(key)
            if value is None or math.isnan(value):
                assert text == "–", (method, split, key, text)
            else:
                assert len(text.split(".")[1]) == 3, text  # printed at 3 decimals
                assert abs(cell_value(text) - value) <= 5e-4 + 1e-12, (method, split, key)


# --------------------------------------------------------------------------- accuracy


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return Base(str(tiny_model.tiny_dir(str(tmp_path_factory.mktemp("tiny")))))


def multi_examples(n: int) -> list[Example]:
    """Multi-token choices of different lengths and counts (so plain and length differ)."""
    options = ("blue sky", "green grass one two", "red", "plum pear apple", "dog")
    return [Example(task="multi", id=f"m{i}", prompt="Q: " + "the sky is blue " * (i + 1)
                    + "so\nA:", choices=options[: 2 + i % 4], correct=(0,))
            for i in range(n)]


def naive_best(loaded, ex: Example, normalization: str) -> tuple[int, float]:
    """Best choice by one full forward pass per choice; and its margin over the runner-up."""
    scores = []
    for text in ex.choices or ():
        ll = score_naive(loaded.model, loaded.tokenizer, ex.prompt, text)
        if normalization == "length":
            _, (ids,) = encode(loaded.tokenizer, ex.prompt, [text], 512)
            ll /= len(ids)
        scores.append(ll)
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    return order[0], scores[order[0]] - scores[order[1]]


def relabel(loaded, examples: list[Example], hits: list[bool], normalization: str,
            extra_correct: bool = False) -> list[Example]:
    """Set each example's correct choices so that the naive best choice is right iff hit.

    With ``extra_correct`` a hit lists a wrong choice first and the best one second
    (multiple correct answers).
    """
    out = []
    for ex, hit in zip(examples, hits, strict=True):
        best, margin = naive_best(loaded, ex, normalization)
        assert margin > 1e-3, f"{ex.id}: near tie, pick another example"
        wrong = (best + 1) % len(ex.choices or ())
        correct = ((wrong, best) if extra_correct else (best,)) if hit else (wrong,)
        out.append(Example(task=ex.task, id=ex.id, prompt=ex.prompt, choices=ex.choices,
                           correct=correct))
    return out


@pytest.mark.parametrize("normalization", ["plain", "length"])
def test_accuracy_by_group_equals_a_naive_argmax_per_group(base: Base,
                                                           normalization: str) -> None:
    loaded = base.load()
    colours = relabel(loaded, tiny_model.colour_task(4, seed=7), [True, True, False, True],
                      normalization)
    other = relabel(loaded, tiny_model.colour_task(5, name="other", seed=9),
                    [False, True, False, False, False], normalization)
    multi = relabel(loaded, multi_examples(6), [True, False, True, True, False, True],
                    normalization, extra_correct=True)
    # Groups given out of their sorted order; batches of 3 mix examples of several groups.
    groups = {("heldout", "other"): tuple(other), ("eval", "multi"): tuple(multi),
              ("eval", "colours"): tuple(colours)}
    got = accuracy_by_group(loaded, loaded.model, EvalSet(groups), normalization,
                            SignalsConfig(batch_size=3))
    assert got == {("eval", "colours"): (pytest.approx(3 / 4), 4),
                   ("eval", "multi"): (pytest.approx(4 / 6), 6),
                   ("heldout", "other"): (pytest.approx(1 / 5), 5)}
    # and the same per example: naive argmax in the example's correct set, per group mean
    for key, examples in groups.items():
        hits = [naive_best(loaded, ex, normalization)[0] in ex.correct for ex in examples]
        assert got[key][0] == pytest.approx(sum(hits) / len(hits), abs=1e-12), key


def test_empty_group_is_nan_with_count_zero(base: Base) -> None:
    loaded = base.load()
    colours = relabel(loaded, tiny_model.colour_task(3, seed=2), [True, False, False], "plain")
    got = accuracy_by_group(loaded, loaded.model,
                            EvalSet({("eval", "colours"): tuple(colours), ("eval", "none"): ()}),
                            "plain", SignalsConfig())
    assert got[("eval", "none")][1] == 0 and math.isnan(got[("eval", "none")][0])
    assert got[("eval", "colours")] == (pytest.approx(1 / 3), 3)


def test_dev_and_test_are_disjoint_and_fixed_by_the_ids():
    from taskpgm.inputs import dev_test
    from taskpgm.tasks.schema import Example

    examples = [Example(task="t", id=f"id{i}", prompt=f"{i}?", choices=("a", "b"), correct=(0,))
                for i in range(40)]
    dev, test = dev_test(examples, 0.5)
    assert len(dev) == len(test) == 20
    assert {ex.id for ex in dev}.isdisjoint({ex.id for ex in test})
    assert {ex.id for ex in dev} | {ex.id for ex in test} == {ex.id for ex in examples}
    # The cut follows the ids, not the order: shuffled input, same parts.
    _, again_test = dev_test(list(reversed(examples)), 0.5)
    assert {ex.id for ex in again_test} == {ex.id for ex in test}
    # By hand: the 20 ids with the smallest sha256 are the test part.
    import hashlib

    smallest = sorted((ex.id for ex in examples),
                      key=lambda i: hashlib.sha256(i.encode()).hexdigest())[:20]
    assert {ex.id for ex in test} == set(smallest)


def test_eval_set_with_a_test_share_has_dev_and_test_groups(tmp_path):
    from taskpgm import config as config_mod
    from taskpgm.inputs import eval_set
    from taskpgm.tasks.schema import Example, TaskSplits

    examples = tuple(Example(task="t", id=f"x{i}", prompt=f"{i}?", choices=("a", "b"),
                             correct=(0,)) for i in range(10))
    splits = TaskSplits(name="t", spec="t.jsonl", kind="mc", train=(), probe=(), eval=examples,
                        examples=10)
    cfg = config_mod.parse("evaluation:\n  test_share: 0.3\n")
    groups = eval_set(cfg, {"t": splits}, {}, {}).groups
    assert set(groups) == {("dev", "t"), ("test", "t")}
    assert len(groups[("test", "t")]) == 3 and len(groups[("dev", "t")]) == 7
    plain = eval_set(config_mod.parse(""), {"t": splits}, {}, {})
    assert set(plain.groups) == {("eval", "t")}
    assert plain.fingerprint() != eval_set(cfg, {"t": splits}, {}, {}).fingerprint()


@pytest.mark.parametrize("normalization", ["plain", "length"])
def test_logprob_is_the_gold_choices_log_probability_by_a_naive_scorer(
        base: Base, normalization: str) -> None:
    """log softmax over the choices' (length-normalized) log-likelihoods, at the gold one."""
    from taskpgm.evaluation import scores_by_group

    loaded = base.load()
    examples = tiny_model.colour_task(5, seed=11) + multi_examples(3)
    groups = {("eval", "colours"): tuple(examples[:5]), ("eval", "multi"): tuple(examples[5:])}
    got = scores_by_group(loaded, loaded.model, EvalSet(groups), normalization,
                          SignalsConfig(batch_size=2))
    for key, members in groups.items():
        want = []
        for ex in members:
            lls = []
            for text in ex.choices or ():
                ll = score_naive(loaded.model, loaded.tokenizer, ex.prompt, text)
                if normalization == "length":
                    ll /= len(encode(loaded.tokenizer, ex.prompt, [text], 512)[1][0])
                lls.append(ll)
            top = max(lls)
            log_z = top + math.log(sum(math.exp(v - top) for v in lls))
            want.append(lls[ex.correct[0]] - log_z)
        assert got[key][2] == pytest.approx(sum(want) / len(want), abs=1e-4), key
        assert got[key][1] == len(members)


def test_summarize_the_secondary_metric():
    rows = [{"method": m, "seed": s, "task": t, "split": "dev", "accuracy": 0.5, "logprob": lp}
            for m, s, t, lp in [("uniform", 0, "a", -1.0), ("uniform", 0, "b", -3.0),
                                ("uniform", 1, "a", -2.0), ("uniform", 1, "b", -2.0),
                                ("x", 0, "a", -0.5), ("x", 0, "b", -1.5),
                                ("x", 1, "a", -1.0), ("x", 1, "b", -2.0)]]
    got = {e["method"]: e for e in summarize(rows, metric="logprob")}
    # uniform: seeds -2.0 and -2.0 (means over tasks); x: -1.0 and -1.5.
    assert got["uniform"]["mean"] == pytest.approx(-2.0)
    assert got["x"]["mean"] == pytest.approx(-1.25)
    assert got["x"]["diff"] == pytest.approx(0.75)  # per seed: +1.0 and +0.5


def test_bits_per_byte_of_generative_items_by_a_naive_scorer(base: Base) -> None:
    """bpb = −ℓ(gold continuation) / (ln 2 · its UTF-8 bytes), per item; nan for choices."""
    from taskpgm.evaluation import item_scores

    loaded = base.load()
    sums = tiny_model.sums_task(5)
    colours = tiny_model.colour_task(3, seed=4)
    groups = {("dev", "sums"): tuple(sums), ("dev", "colours"): tuple(colours)}
    got = item_scores(loaded, loaded.model, EvalSet(groups), "length",
                      SignalsConfig(batch_size=2))
    want = [-score_naive(loaded.model, loaded.tokenizer, ex.prompt, ex.targets[0])
            / (math.log(2) * len(ex.targets[0].encode())) for ex in sums]
    assert list(got[("dev", "sums")].bpb) == pytest.approx(want, abs=1e-4)
    assert got[("dev", "sums")].ids == tuple(ex.id for ex in sums)
    assert all(math.isnan(v) for v in got[("dev", "colours")].bpb)
    _acc, n, logp, bpb = got[("dev", "sums")].means()
    assert n == 5 and bpb == pytest.approx(sum(want) / 5, abs=1e-4)
    assert logp == pytest.approx(float(got[("dev", "sums")].logprob.mean()))


def one_seed_rows() -> list[dict[str, object]]:
    return [{"method": m, "seed": 0, "task": t, "split": "eval", "accuracy": a,
             "logprob": lp, "n": 10}
            for m, t, a, lp in [("uniform", "a", 0.4, -1.0), ("uniform", "b", 0.6, -2.0),
                                ("taskpgm", "a", 0.6, -0.8), ("taskpgm", "b", 0.7, -1.9)]]


def test_keyed_batch_count_is_the_uniform_mixtures_batches():
    from taskpgm.evaluation import keyed_batch_count

    # budget 1200 over three tasks of 10, 20 and 40 tokens: 40 + 20 + 10 = 70 examples
    assert keyed_batch_count(1200, [10.0, 20.0, 40.0], 8) == 9  # ⌈70 / 8⌉
    assert keyed_batch_count(1200, [10.0, 20.0, 40.0], 7) == 10
    assert keyed_batch_count(10, [400.0], 8) == 1  # never below one


def test_one_seed_prints_no_bare_difference():
    from taskpgm.core.summary import evaluation_markdown, seed_note

    summary = summarize(one_seed_rows())
    _header, body = parse_markdown(markdown_table(summary))
    row = {r[0]: r for r in body}["taskpgm"]
    assert row[5] == "0.150" and row[6] == "one seed: no interval"
    assert seed_note(summary).startswith("One seed: a demonstration, not a comparison")
    text = evaluation_markdown(one_seed_rows())
    assert "## Accuracy" in text and "## Gold log-probability" in text
    assert "| taskpgm | eval | 1 | -1.350 | [–, –] | 0.150 | one seed: no interval |" in text
    assert "Bits per byte" not in text  # no generative task
    # with two paired seeds the note and the table give the interval instead
    two = one_seed_rows() + [{**r, "seed": 1, "accuracy": float(r["accuracy"]) - 0.1}
                             for r in one_seed_rows()]
    assert seed_note(summarize(two)).startswith("Differences against uniform are paired "
                                                "over 2 seeds")
    assert "one seed" not in markdown_table(summarize(two))
