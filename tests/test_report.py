"""The report: every section rendered, checked in a real headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

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
