"""The report: every section rendered, checked in a real headless Chromium."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from report_fixture import EVIL, make_run
from taskpgm.report import cluster_order, render

TASKS = ["addition", "subtraction", "multiplication", "hyperbaton", "navigate", EVIL]
SECTIONS = ["glance", "experts", "relations", "pathways", "weights", "evaluation"]
FIGURES = ["experts", "jsd", "displacement", "pmi", "affinity", "graph", "transfer", "weights",
           "rho", "evaluation"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("report"), TASKS)
    return render(run)


def test_report_is_self_contained_and_escaped(report):
    text = report.read_text()
    assert text.count("<script>") == 1  # the table sorter, nothing from the data
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    for outward in ('src="http', "src='http", 'href="http', "href='http", "url(http", "@import"):
        assert outward not in text
    for key in FIGURES:
        assert f'id="fig-{key}"' in text


def test_cluster_order_groups_related_tasks():
    import numpy as np

    s = np.eye(4)
    s[0, 2] = s[2, 0] = 0.9
    s[1, 3] = s[3, 1] = 0.8
    order = cluster_order(s)
    assert abs(order.index(0) - order.index(2)) == 1 and abs(order.index(1) - order.index(3)) == 1


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is installed by `make test` (apt-get)")
def test_report_in_headless_chromium(report, tmp_path):
    from playwright.sync_api import sync_playwright

    console_errors: list[str] = []
    requests: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        for section in SECTIONS:
            assert page.locator(f"#{section}").count() == 1, section
        for key in FIGURES:
            box = page.locator(f"#fig-{key} svg").bounding_box()
            assert box is not None and box["width"] > 50 and box["height"] > 50, key
        body = page.inner_text("body")
        assert EVIL in body  # shown as text
        assert page.evaluate("document.scripts.length") == 1
        # tables sort on a header click
        first = page.locator("#glance table").nth(1)
        first.locator("th").nth(1).click()
        values = [float(v) for v in first.locator("tbody tr td:nth-child(2)").all_inner_texts()]
        assert values == sorted(values)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert console_errors == []
    assert dialogs == []
    assert requests == [report.as_uri()]


# --------------------------------------------------------------------------- the numbers shown


class Page(HTMLParser):
    """The report's tables (by section) and paragraph texts; figures are skipped."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.section = ""
        self.tables: list[tuple[str, list[str], list[list[str]]]] = []
        self.paragraphs: list[tuple[str, str]] = []
        self._svg = 0
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._p: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self._svg += 1
        if self._svg:
            return
        if tag == "section":
            self.section = dict(attrs).get("id") or ""
        elif tag == "table":
            self.tables.append((self.section, [], []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "p":
            self._p = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg -= 1
            return
        if self._svg:
            return
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
            self._header = tag == "th"
        elif tag == "tr" and self._row is not None:
            _, header, rows = self.tables[-1]
            if self._header and not header:
                header.extend(self._row)
            else:
                rows.append(self._row)
            self._row = None
        elif tag == "p" and self._p is not None:
            self.paragraphs.append((self.section, "".join(self._p)))
            self._p = None

    def handle_data(self, data: str) -> None:
        if self._svg:
            return
        if self._cell is not None:
            self._cell.append(data)
        if self._p is not None:
            self._p.append(data)

    def table(self, section: str, *starts: str) -> tuple[list[str], list[list[str]]]:
        """The one table of ``section`` whose header starts with ``starts``."""
        found = [(h, r) for s, h, r in self.tables
                 if s == section and h[: len(starts)] == list(starts)]
        assert len(found) == 1, (section, starts, [h for s, h, _ in self.tables])
        return found[0]


def shown(text: str) -> float:
    """A number as the report prints it; '–' (nothing to show) is nan."""
    return math.nan if text == "–" else float(text)


def agrees(text: str, value: float | None, digits: int = 3) -> bool:
    """``text`` is ``value`` printed at ``digits`` decimals (or '–' for none/nan)."""
    if value is None or not math.isfinite(value):
        return text == "–"
    return abs(shown(text) - value) <= 0.5 * 10**-digits + 1e-12


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return center - half, center + half


T_975 = {1: 12.706205, 2: 4.302653}  # Student-t 0.975 quantiles by degrees of freedom


def t_interval(values: list[float]) -> tuple[float, float | None, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = T_975[len(values) - 1] * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


@pytest.fixture(scope="module")
def page(report) -> Page:
    return Page(report.read_text())


def run_json(report: Path, name: str):
    return json.loads((report.parent / name).read_text())


def relations_arrays(report: Path) -> tuple[dict[str, np.ndarray], dict]:
    from safetensors.numpy import load_file

    rel = Path(run_json(report, "stages.json")["relations"]["path"])
    return load_file(str(rel / "relations.safetensors")), json.loads(
        (rel / "manifest.json").read_text())


def test_glance_shows_weights_json(report, page):
    weights = run_json(report, "weights.json")
    counts = run_json(report, "counts.json")
    _, rows = page.table("glance", "", "")
    facts = dict(rows)
    assert facts["tasks"] == str(len(TASKS)) and facts["token budget"] == "60000"
    assert facts["method"] == weights["method"]
    assert agrees(facts["energy"], weights["energy"], 6)
    kkt = shown(facts["KKT residual"])  # one significant digit
    assert kkt == pytest.approx(weights["kkt_residual"], rel=0.05, abs=1e-300)
    _, rows = page.table("glance", "task", "weight")
    assert sorted(r[0] for r in rows) == sorted(TASKS)
    for task, weight, examples in rows:
        assert agrees(weight, weights["weights"][task]), task
        assert int(examples) == counts[task]
    shown_weights = [shown(r[1]) for r in rows]
    assert shown_weights == sorted(shown_weights, reverse=True)


def test_experts_table_shows_the_relations_accuracy(report, page):
    arrays, _ = relations_arrays(report)
    acc, n = arrays["accuracy"], arrays["probe_n"]
    _, rows = page.table("experts", "task")
    assert len(rows) == len(TASKS)
    flagged = []
    for task, probe_n, base, expert, lo, hi, learned in rows:
        i = TASKS.index(task)
        assert int(probe_n) == n[i]
        assert agrees(base, float(acc[0, i])) and agrees(expert, float(acc[i + 1, i])), task
        want_lo, want_hi = wilson(round(float(acc[i + 1, i]) * n[i]), int(n[i]))
        assert agrees(lo, want_lo) and agrees(hi, want_hi), task
        assert learned.startswith("yes" if want_lo > acc[0, i] else "NO"), task
        if learned.startswith("NO"):
            flagged.append(task)
    assert flagged == [TASKS[1]]  # the fixture's expert that did not learn
    assert "<td class='flag'>NO" in report.read_text()


def test_relations_shows_the_psd_correction_and_the_transfer_sources(report, page):
    arrays, manifest = relations_arrays(report)
    clipped = manifest["psd"]["clipped_eigenvalues"]
    assert clipped  # the fixture's affinity needed a PSD correction
    (text,) = [t for s, t in page.paragraphs if s == "relations" and "PSD" in t]
    found = re.search(r"(\d+) negative eigenvalue\(s\) clipped \(sum (-?\d+\.\d+)\), "
                      r"Frobenius change (-?\d+\.\d+)", text)
    assert found is not None, text
    assert int(found[1]) == len(clipped)
    assert agrees(found[2], sum(abs(v) for v in clipped), 4)
    assert agrees(found[3], manifest["psd"]["correction_norm"], 4)
    pmi = arrays["pmi"]  # row i: expert i, column j: task j
    _, rows = page.table("relations", "task")
    assert sorted(r[0] for r in rows) == sorted(TASKS)
    for task, sources, worst in rows:
        j = TASKS.index(task)
        others = [float(pmi[i, j]) for i in range(len(TASKS)) if i != j]
        listed = re.findall(r"(.+?) \(([-+][\d.]+)\)(?:, |$)", sources)
        assert len(listed) == 2, sources
        for name, value in listed:
            assert name != task and agrees(value, float(pmi[TASKS.index(name), j])), sources
        top = sorted(others, reverse=True)[:2]
        assert all(agrees(v, t) for (_, v), t in zip(listed, top, strict=True)), sources
        assert agrees(worst, min(others)), task


def test_weights_tables_show_methods_json(report, page):
    methods = run_json(report, "methods.json")["methods"]
    header, rows = page.table("weights", "task")
    assert header[1:] == list(methods)
    assert [r[0] for r in rows] == TASKS
    for task, *values in rows:
        for method, value in zip(header[1:], values, strict=True):
            assert agrees(value, methods[method]["weights"][task]), (task, method)
    _, rows = page.table("weights", "step")
    budget = methods["taskpgm-k3"]
    assert [r[1] for r in rows] == budget["selected"]
    assert [int(r[0]) for r in rows] == list(range(1, len(budget["selected"]) + 1))
    assert all(agrees(r[2], g) for r, g in zip(rows, budget["greedy_gains"], strict=True))


def evaluation_rows(report: Path) -> list[dict[str, str]]:
    with (report.parent / "evaluation.csv").open() as f:
        return list(csv.DictReader(f))


def test_evaluation_tables_show_seed_means_and_paired_differences(report, page):
    # Recomputed from evaluation.csv: a split's accuracy (and gold log-probability) for one
    # seed is the mean over its tasks; intervals are over seeds; differences pair each seed
    # with uniform's.
    def expected(table: dict, key: tuple, ref_key: tuple) -> list[float | None]:
        seeds = table[key]
        mean, lo, hi = t_interval([seeds[s] for s in sorted(seeds)])
        ref = table.get(ref_key)
        diff: tuple[float | None, ...] = (None, None, None)
        if ref is not None and key[0] != "uniform":
            diff = t_interval([seeds[s] - ref[s] for s in sorted(set(seeds) & set(ref))])
        return [float(len(seeds)), mean, lo, hi, *diff]

    assert "Differences against uniform are paired over 3 seeds" in report.read_text()
    for field, column in (("accuracy", "accuracy"), ("logprob", "gold log-prob")):
        acc: dict[tuple[str, str, str], dict[int, float]] = {}
        for r in evaluation_rows(report):
            acc.setdefault((r["method"], r["split"], r["task"]), {})[int(r["seed"])] = float(
                r[field])
        per_seed: dict[tuple[str, str], dict[int, list[float]]] = {}
        for (method, split, _), seeds in acc.items():
            for seed, value in seeds.items():
                per_seed.setdefault((method, split), {}).setdefault(seed, []).append(value)
        split_acc = {key: {s: sum(v) / len(v) for s, v in seeds.items()}
                     for key, seeds in per_seed.items()}
        _, rows = page.table("evaluation", "method", "split", "seeds", column)
        assert sorted((r[0], r[1]) for r in rows) == sorted(split_acc)
        assert ("base", "eval") in split_acc and ("taskpgm-k3", "eval") in split_acc
        for method, split, *cells in rows:
            want = expected(split_acc, (method, split), ("uniform", split))
            assert int(cells[0]) == want[0]
            for text, value in zip(cells[1:], want[1:], strict=True):
                assert agrees(text, value), (field, method, split, cells, want)
        if field != "accuracy":
            continue
        _, task_rows = page.table("evaluation", "method", "split", "task")
        assert sorted((r[0], r[1], r[2]) for r in task_rows) == sorted(acc)
        for method, split, task, *cells in task_rows:
            want = expected(acc, (method, split, task), ("uniform", split, task))
            assert int(cells[0]) == want[0]
            for text, value in zip(cells[1:], want[1:], strict=True):
                assert agrees(text, value), (method, split, task, cells, want)


def test_why_section_shows_each_tasks_redundancy_and_partners(report, page):
    """Weight, redundancy (S p)_i and the two tasks it shares most mass with, by hand."""
    methods = run_json(report, "methods.json")["methods"]
    arrays, _ = relations_arrays(report)
    s = arrays["affinity"]
    p = np.array([methods["taskpgm"]["weights"][t] for t in TASKS])
    header, rows = page.table("why", "task", "weight")
    assert "redundancy (Qp)" in header and "shares mass with" in header
    col = {name: header.index(name) for name in header}
    for i, row in enumerate(rows):
        assert row[0] == TASKS[i]
        assert agrees(row[col["weight"]], p[i])
        assert agrees(row[col["redundancy (Qp)"]], float(sum(s[i, j] * p[j] for j in range(6))))
        share = {TASKS[j]: s[i, j] * p[j] for j in range(6) if j != i and s[i, j] * p[j] > 1e-9}
        want = sorted(share, key=lambda k: -share[k])[:2]
        assert row[col["shares mass with"]] == (", ".join(want) or "–")
