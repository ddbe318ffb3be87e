"""One self-contained HTML page that shows why the mixture is what it is.

``render(run_dir)`` reads only the run directory and the artifacts it names
(relations), and writes ``run_dir/report.html``. Every figure is a small
function from arrays to an inline SVG made by matplotlib: a well-kept library
whose SVG output needs no script or network to view, and whose text is drawn
as glyph paths, so no task name can inject markup through a figure. Every
string that comes from the data and enters the HTML goes through
:func:`html.escape`. The only script is a dozen lines that sort tables.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskpgm import atomic
from taskpgm.core.stats import wilson_interval
from taskpgm.core.summary import seed_note, summarize
from taskpgm.rundir import RunDir

CAPTION = {
    "experts": "Each expert's accuracy on its own task's probe split (95% Wilson interval) "
               "against the base model; flagged experts did not beat the base model, so their "
               "relations are not to be trusted.",
    "jsd": "Mean Jensen–Shannon divergence (nats) between the predictions of every pair of "
           "models on the probe set, base model first; brighter is more different.",
    "displacement": "Cosine between the experts' moves away from the base model: near 1, two "
                    "experts changed the base's predictions the same way.",
    "pmi": "Transfer PMI: row i, column j is how much expert i raised the log-probability of "
           "task j's answers over the base model; red is transfer, blue is interference.",
    "affinity": "The affinity S the mixture is solved with (displacement cosine blended with "
                "the squashed transfer), tasks ordered by a hierarchical clustering of S.",
    "graph": "Strongest affinities between tasks (each task's two strongest links); line "
             "width grows with the affinity.",
    "transfer": "For each task, an arrow from the expert that raises its answers' "
                "log-probability most (directed transfer PMI); no arrow when none helps.",
    "weights": "Weight of each task (its share of the training tokens) under each method; "
               "error bars: 5-95% over bootstrap draws of the probe set.",
    "rho": "TaskPGM's weights as rho grows from 0 (most diverse) to 2/T; the dashed line is "
           "the chosen rho.",
    "anchor": "TaskPGM's weights as the KL anchor's strength lambda grows from 0 (the plain "
              "energy's minimizer) to infinity (the prior, under the caps); the dashed line "
              "is the run's lambda.",
    "evaluation": "Mean accuracy over seeds with 95% intervals over seeds, per method and "
                  "split; seeds are paired across methods.",
}


# --------------------------------------------------------------------------- figures


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    start, end = text.find("<metadata>"), text.find("</metadata>")
    if start != -1 and end != -1:  # RDF boilerplate: not needed to view the figure
        text = text[:start] + text[end + len("</metadata>"):]
    return text


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    matplotlib.rcParams["svg.hashsalt"] = "taskpgm"
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def cluster_order(s: np.ndarray) -> list[int]:
    """Leaf order of an average-linkage clustering on the distance 1 − S."""
    n = s.shape[0]
    if n < 3:
        return list(range(n))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    dist = np.clip(1.0 - s, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(0.5 * (dist + dist.T)), "average"))]


def heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], *,
            diverging: bool = False, fmt: str = "{:.2f}") -> str:
    """A labelled heatmap; diverging colors centred on 0 for signed matrices."""
    fig, ax = _figure(0.55 * len(cols) + 2.5, 0.45 * len(rows) + 1.5)
    if diverging:
        lim = float(np.abs(matrix).max()) or 1.0
        im = ax.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim)
    else:
        im = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(cols)), [_short(c) for c in cols], rotation=60, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(rows)), [_short(r) for r in rows], fontsize=8)
    if len(rows) * len(cols) <= 400:
        for i in range(len(rows)):
            for j in range(len(cols)):
                ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=6,
                        color="black" if diverging else "white")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _svg(fig)


def _short(name: str, n: int = 28) -> str:
    name = name.split(":", 1)[-1]
    return name if len(name) <= n else name[: n - 1] + "…"


def experts_figure(tasks: Sequence[str], base: np.ndarray, expert: np.ndarray,
                   n: Sequence[int]) -> str:
    fig, ax = _figure(0.6 * len(tasks) + 3, 3.2)
    x = np.arange(len(tasks))
    for offset, values, label in ((-0.18, base, "base model"), (0.18, expert, "expert")):
        lo_hi = [wilson_interval(round(v * k), k) for v, k in zip(values, n, strict=True)]
        err = np.array([[v - lo for v, (lo, _) in zip(values, lo_hi, strict=True)],
                        [hi - v for v, (_, hi) in zip(values, lo_hi, strict=True)]])
        ax.errorbar(x + offset, values, yerr=np.clip(err, 0, None), fmt="o", capsize=3,
                    label=label)
    ax.set_xticks(x, [_short(t) for t in tasks], rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("probe accuracy")
    ax.legend(fontsize=8)
    return _svg(fig)


def _circle(t: int) -> tuple[Any, Any, np.ndarray]:
    """A square figure and t points on a circle (the task graphs' layout)."""
    fig, ax = _figure(5.5, 5.5)
    angle = 2 * np.pi * np.arange(t) / max(t, 1)
    return fig, ax, np.c_[np.cos(angle), np.sin(angle)]


def _circle_svg(fig: Any, ax: Any, xy: np.ndarray, tasks: Sequence[str]) -> str:
    """Draw the task nodes and their names over the edges, then the SVG."""
    ax.scatter(xy[:, 0], xy[:, 1], s=120, color="tab:orange", zorder=3)
    for i, name in enumerate(tasks):
        ax.text(1.15 * xy[i, 0], 1.15 * xy[i, 1], _short(name, 22), ha="center", va="center",
                fontsize=8)
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.4, 1.4)
    ax.axis("off")
    return _svg(fig)


def graph_figure(tasks: Sequence[str], s: np.ndarray, per_node: int = 2) -> str:
    """Tasks on a circle; each task's strongest affinities as edges."""
    t = len(tasks)
    fig, ax, xy = _circle(t)
    off = s.copy()
    np.fill_diagonal(off, -np.inf)
    edges = set()
    for i in range(t):
        for j in np.argsort(-off[i])[:per_node]:
            if np.isfinite(off[i, j]):
                edges.add((min(i, int(j)), max(i, int(j))))
    top = max([off[i, j] for i, j in edges], default=1.0) or 1.0
    for i, j in sorted(edges):
        w = max(off[i, j], 0.0) / top
        ax.plot(*zip(xy[i], xy[j], strict=True), color="tab:blue", alpha=0.3 + 0.6 * w,
                linewidth=0.5 + 4 * w)
    return _circle_svg(fig, ax, xy, tasks)


def transfer_figure(tasks: Sequence[str], pmi: np.ndarray) -> str:
    """Tasks on a circle; an arrow from the expert that helps each task most (positive PMI)."""
    t = len(tasks)
    fig, ax, xy = _circle(t)
    top = float(np.abs(pmi).max()) or 1.0
    for j in range(t):
        col = pmi[:, j].copy()
        col[j] = -np.inf
        i = int(np.argmax(col))
        if t > 1 and col[i] > 0:
            w = col[i] / top
            ax.annotate("", xy=xy[j] * 0.92, xytext=xy[i] * 0.92,
                        arrowprops={"arrowstyle": "-|>", "color": "tab:red",
                                    "alpha": 0.4 + 0.6 * w, "linewidth": 0.8 + 3 * w,
                                    "connectionstyle": "arc3,rad=0.15"})
    return _circle_svg(fig, ax, xy, tasks)


def weights_figure(tasks: Sequence[str], methods: dict[str, list[float]],
                   intervals: dict[str, list[tuple[float, float]]] | None = None) -> str:
    """Bars per method; a method with bootstrap intervals gets 5-95% error bars."""
    fig, ax = _figure(0.7 * len(tasks) + 3, 3.2)
    x = np.arange(len(tasks))
    width = 0.8 / max(len(methods), 1)
    for k, (name, w) in enumerate(methods.items()):
        span = (intervals or {}).get(name)
        yerr = None if span is None else np.array(
            [[max(v - lo, 0.0) for v, (lo, _) in zip(w, span, strict=True)],
             [max(hi - v, 0.0) for v, (_, hi) in zip(w, span, strict=True)]])
        ax.bar(x - 0.4 + width * (k + 0.5), w, width, label=name, yerr=yerr, capsize=2,
               error_kw={"linewidth": 0.8})
    ax.set_xticks(x, [_short(t) for t in tasks], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("weight")
    ax.legend(fontsize=7)
    return _svg(fig)


def rho_figure(tasks: Sequence[str], path: Sequence[dict[str, Any]], chosen: float) -> str:
    fig, ax = _figure(6.5, 3.2)
    rhos = [p["rho"] for p in path]
    w = np.array([p["weights"] for p in path])
    for i, name in enumerate(tasks):
        ax.plot(rhos, w[:, i], label=_short(name, 20))
    ax.axvline(chosen, linestyle="--", color="black")
    ax.set_xlabel("rho")
    ax.set_ylabel("weight")
    ax.legend(fontsize=6, ncol=2)
    return _svg(fig)


def anchor_figure(tasks: Sequence[str], path: Sequence[dict[str, Any]], chosen: float) -> str:
    """Weights against the anchor's strength λ: 0 (the plain energy) at the left, the prior
    (λ = inf) at the right, the log-spaced λ between."""
    fig, ax = _figure(6.5, 3.2)
    x = np.arange(len(path))
    w = np.array([p["weights"] for p in path])
    for i, name in enumerate(tasks):
        ax.plot(x, w[:, i], marker=".", label=_short(name, 20))
    labels = ["prior" if p["strength"] is None else "0" if p["strength"] == 0
              else f"{p['strength']:.0e}" for p in path]
    ax.set_xticks(x, labels, rotation=40, ha="right", fontsize=7)
    finite = [i for i, p in enumerate(path) if p["strength"] is not None and p["strength"] > 0]
    if chosen > 0 and finite:
        logs = np.log10([path[i]["strength"] for i in finite])
        ax.axvline(float(np.interp(np.log10(chosen), logs, finite)), linestyle="--",
                   color="black")
    ax.set_xlabel("anchor strength lambda")
    ax.set_ylabel("weight")
    ax.legend(fontsize=6, ncol=2)
    return _svg(fig)


def evaluation_figure(summary: Sequence[dict[str, Any]]) -> str:
    splits = sorted({e["split"] for e in summary})
    methods = sorted({e["method"] for e in summary})
    fig, ax = _figure(1.2 * len(methods) * max(len(splits), 1) / 2 + 3, 3.2)
    for k, split in enumerate(splits):
        rows = [next((e for e in summary if e["method"] == m and e["split"] == split), None)
                for m in methods]
        x = np.arange(len(methods)) + 0.2 * (k - (len(splits) - 1) / 2)
        mean = np.array([r["mean"] if r else np.nan for r in rows])
        lo = np.array([r["lo"] if r else np.nan for r in rows])
        hi = np.array([r["hi"] if r else np.nan for r in rows])
        err = np.nan_to_num(np.vstack([mean - lo, hi - mean]))
        ax.errorbar(x, mean, yerr=np.clip(err, 0, None), fmt="o", capsize=3, label=split)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return _svg(fig)


# --------------------------------------------------------------------------- HTML pieces


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{num(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<table class="sortable {cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def figure(key: str, svg: str) -> str:
    return f'<figure id="fig-{key}">{svg}<figcaption>{esc(CAPTION[key])}</figcaption></figure>'


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}section{margin:2em 0}table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2;cursor:pointer}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}
figcaption{font-size:13px;color:#555}.flag{color:#b00;font-weight:bold}.muted{color:#777;font-size:12px}
code{font-size:12px}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].textContent, y = b.cells[i].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


# --------------------------------------------------------------------------- the page


def render(run_dir: Path) -> Path:
    """Render ``run_dir/report.html`` from the run directory and its relations artifact."""
    from taskpgm.readers import open_relations

    run_dir = Path(run_dir)
    files = RunDir(run_dir)
    config = files.read_config()
    stages: dict[str, Any] = dict(files.read_stages())
    weights: dict[str, Any] = dict(files.read_weights() or {})
    methods: dict[str, Any] = dict(files.read_methods())
    counts = files.read_counts()
    summary = files.read_evaluation_summary()
    rel_path = stages.get("relations", {}).get("path")
    relations = open_relations(Path(rel_path)) if rel_path and Path(rel_path).is_dir() else None
    tasks: list[str] = list(methods.get("tasks") or (relations.tasks if relations else []))
    parts = [f"<h1>taskpgm report</h1><p class='muted'>{esc(run_dir.resolve())}</p>"]
    parts.append(_glance(config, stages, weights, counts))
    if relations is not None:
        parts.append(_experts(relations))
        parts.append(_relations(relations))
    else:
        parts.append("<section id='relations'><h2>Relations</h2><p>The relations artifact "
                     "is not on this machine; rerun <code>taskpgm run</code>.</p></section>")
    parts.append(_weights(tasks, methods, config, _method_cpu(stages)))
    if relations is not None and methods.get("methods"):
        parts.append(_why(relations, methods))
    parts.append(_evaluation(files, summary))
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>taskpgm report</title><style>{STYLE}</style></head><body>"
            + "".join(parts) + f"<script>{SORT_SCRIPT}</script></body></html>\n")
    out = files.report_path
    atomic.write_text(out, page)
    return out


def _glance(config: dict[str, Any], stages: dict[str, Any], weights: dict[str, Any],
            counts: dict[str, int]) -> str:
    mrf = config.get("mrf", {})
    rows = [("base model", config.get("base", {}).get("model")),
            ("tasks", len(weights.get("weights", {}))),
            ("token budget", config.get("mixture", {}).get("token_budget")),
            ("rho", mrf.get("rho")), ("budget k", mrf.get("budget") or "none"),
            ("method", weights.get("method")),
            ("energy", f"{weights['energy']:.6f}" if "energy" in weights else "–"),
            ("KKT residual",
             f"{weights['kkt_residual']:.1e}" if "kkt_residual" in weights else "–")]
    glance = table(["", ""], rows)
    wrows = [(t, w, counts.get(t, "")) for t, w in sorted(weights.get("weights", {}).items(),
                                                          key=lambda kv: -kv[1])]
    srows = []
    for name, info in stages.items():
        fp = info.get("fingerprint") or ""
        if not fp and isinstance(info.get("fingerprints"), dict):
            fp = " ".join(f"{t}={f}" for t, f in info["fingerprints"].items())
        srows.append((name, "done" if info.get("done") else "not done",
                      info.get("seconds"), _compute(info.get("compute")), fp))
    return ("<section id='glance'><h2>The run at a glance</h2>" + glance
            + "<h3>Final weights</h3>" + table(["task", "weight", "examples"], wrows)
            + "<h3>Stages</h3>"
            + table(["stage", "status", "seconds", "device, precision (why)", "fingerprint"],
                    srows)
            + "</section>")


def _compute(info: Any) -> str:
    """``cpu fp32 (no native bf16 (avx2))``; the evaluation adds its training's."""
    if not isinstance(info, dict) or "device" not in info:
        return ""
    text = f"{info['device']} {info.get('precision', '')} ({info.get('why', '')})"
    training = info.get("training")
    if isinstance(training, dict) and "device" in training:
        text = (f"scoring {text}; training {training['device']} "
                f"{training.get('precision', '')} ({training.get('why', '')})")
    return text


def _experts(relations: Any) -> str:
    from taskpgm.weights import learned

    tasks = relations.tasks
    acc = relations.arrays["accuracy"]
    n = relations.arrays["probe_n"].astype(int)
    base = acc[0]
    expert = np.array([acc[i + 1, i] for i in range(len(tasks))])
    ok, intervals = learned(relations)
    rows = [(t, int(n[i]), float(base[i]), float(expert[i]), *map(float, intervals[i]),
             "yes" if ok[i] else "NO — relations not trusted") for i, t in enumerate(tasks)]
    return ("<section id='experts'><h2>Experts</h2>"
            + figure("experts", experts_figure(tasks, base, expert, n))
            + table(["task", "probe n", "base acc", "expert acc", "expert 95% lo",
                     "expert 95% hi", "learned"], rows).replace(
                "<td>NO — relations not trusted</td>",
                "<td class='flag'>NO — relations not trusted</td>")
            + "</section>")


def _relations(relations: Any) -> str:
    tasks = relations.tasks
    a = relations.arrays
    order = cluster_order(a["affinity"])
    names = [tasks[i] for i in order]
    ix = np.ix_(order, order)
    models = ["base", *tasks]
    morder = [0, *(i + 1 for i in order)]
    psd = relations.info.get("psd", {})
    clipped = psd.get("clipped_eigenvalues", [])
    pmi = a["pmi"][ix]
    sources = []
    for j, t in enumerate(names):
        col = pmi[:, j].copy()
        col[j] = -np.inf
        best = [k for k in np.argsort(-col)[:2] if np.isfinite(col[k])]
        sources.append((t, ", ".join(f"{names[k]} ({col[k]:+.3f})" for k in best),
                        float(np.min(np.where(np.isfinite(col), col, np.inf)))))
    return ("<section id='relations'><h2>Relations</h2>"
            + figure("jsd", heatmap(a["jsd"][np.ix_(morder, morder)],
                                    [models[i] for i in morder], [models[i] for i in morder]))
            + figure("displacement", heatmap(a["displacement"][ix], names, names))
            + figure("pmi", heatmap(pmi, names, names, diverging=True, fmt="{:+.2f}"))
            + figure("affinity", heatmap(a["affinity"][ix], names, names))
            + f"<p>PSD correction: {len(clipped)} negative eigenvalue(s) clipped "
              f"(sum {num(float(sum(abs(v) for v in clipped)), 4)}), Frobenius change "
              f"{num(psd.get('correction_norm'), 4)}. Generative answer positions keep each "
              "model's top-k tokens plus one tail bucket, so their JSD is a lower bound.</p>"
            + "<h3 id='pathways'>Task influence pathways</h3>"
            + figure("graph", graph_figure(names, a["affinity"][ix]))
            + figure("transfer", transfer_figure(names, pmi))
            + table(["task", "experts that transfer to it most (PMI)", "worst interference"],
                    sources)
            + "</section>")


def _method_cpu(stages: dict[str, Any]) -> dict[str, float]:
    """Each method's CPU seconds, from the weights artifact's manifest (empty when absent)."""
    from taskpgm.artifacts import read_manifest
    from taskpgm.errors import DataError

    path = stages.get("weights", {}).get("path")
    try:
        manifest = read_manifest(Path(path)) if path else {}
    except DataError:
        return {}
    cpu = manifest.get("method_cpu_s", {})
    return cpu if isinstance(cpu, dict) else {}


def _weights(tasks: list[str], methods: dict[str, Any], config: dict[str, Any],
             cpu: dict[str, float] | None = None) -> str:
    if not methods:
        return "<section id='weights'><h2>Weights</h2><p>Not computed yet.</p></section>"
    by_method: dict[str, list[float]] = {
        str(m): [float(d["weights"][t]) for t in tasks] for m, d in methods["methods"].items()}
    rows = [(t, *(by_method[m][i] for m in by_method)) for i, t in enumerate(tasks)]
    main = methods["methods"].get("taskpgm", {})
    held = {"uniform": "held at the uniform share 1/T", "exclude": "given no weight",
            "keep": "solved with the rest anyway"}.get(str(main.get("untrusted")), "")
    note = (f"<p>Experts that did not learn, so their relations are not trusted: "
            f"{esc(', '.join(main['untrusted_tasks']))} — {held} (mrf.untrusted).</p>"
            if main.get("untrusted_tasks") else "")
    spans = {m: [(d["intervals"]["tasks"][t]["lo"], d["intervals"]["tasks"][t]["hi"])
                 for t in tasks]
             for m, d in methods["methods"].items() if "intervals" in d}
    solves = [(m, d.get("energy_form", "-"), d.get("objective", d.get("energy")),
               ", ".join(f"{k} {v:.1e}" for k, v in d.get("certificate", {}).items()
                         if isinstance(v, float)) or "-",
               (cpu or {}).get(m))
              for m, d in methods["methods"].items() if "energy" in d]
    parts = ["<section id='weights'><h2>Weights</h2>", note,
             figure("weights", weights_figure(tasks, by_method, spans)),
             table(["task", *by_method], rows),
             "<h3>Solves</h3>",
             table(["method", "energy", "objective", "certificate", "CPU s"], solves)]
    if methods.get("rho_path"):
        parts.append(figure("rho", rho_figure(tasks, methods["rho_path"],
                                              float(config.get("mrf", {}).get("rho", 0.0)))))
    if methods.get("anchor_path"):
        anchor = methods.get("anchor", {})
        parts.append(f"<h3>Along the anchor (prior {esc(anchor.get('prior', '?'))})</h3>"
                     + figure("anchor", anchor_figure(tasks, methods["anchor_path"],
                                                      float(anchor.get("strength", 0.0)))))
    for name, data in methods["methods"].items():
        if data.get("selected"):
            steps = [(k + 1, t, g) for k, (t, g) in enumerate(
                zip(data["selected"], data["greedy_gains"], strict=True))]
            parts.append(f"<h3>Greedy selection ({esc(name)})</h3>"
                         + table(["step", "task added", "energy decrease"], steps))
    return "".join(parts) + "</section>"


def _why(relations: Any, methods: dict[str, Any]) -> str:
    """Each task's weight explained: its benefit term, its redundancy with the others (the
    tasks it shares mass with), its bootstrap interval; and the paper's setting beside."""
    from taskpgm.weights import energy_terms

    main = methods["methods"].get("taskpgm", {})
    tasks = relations.tasks
    form = str(main.get("energy_form", "affinity"))
    if form == "mixmin":
        return _why_mixmin(relations, main)
    quad, lin = energy_terms(relations, form, str(main.get("utility", "representativeness"))
                             )(np.arange(len(tasks)))
    p = np.array([main["weights"][t] for t in tasks])
    rho = float(main.get("rho", 0.0))
    spans = main.get("intervals", {}).get("tasks", {})
    dropped = set(main.get("intervals", {}).get("dropped", []))
    rows = []
    for i, task in enumerate(tasks):
        share = quad[i] * p
        share[i] = 0.0
        partners = [tasks[j] for j in np.argsort(-share)[:2] if share[j] > 1e-9]
        span = spans.get(task)
        rows.append((task, p[i], f"[{span['lo']:.3f}, {span['hi']:.3f}]" if span else "–",
                     span["p_positive"] if span else "–", rho * lin[i], float(quad[i] @ p),
                     ", ".join(partners) or "–", "yes" if task in dropped else "no"))
    text = ("<p>At the optimum every task with weight has the same net gradient "
            "(redundancy − benefit); a task whose benefit cannot pay for its redundancy with "
            "the tasks already chosen gets no weight. The interval is 5–95% over bootstrap "
            "draws of the probe set; a task counts as dropped only when it gets no weight in "
            f"at least 90% of them. Energy: {esc(form)} ({esc(main.get('kernel', ''))}).</p>")
    part = ("<section id='why'><h2>Why each task gets its weight</h2>" + text
            + table(["task", "weight", "5–95%", "P(weight > 0)", "benefit ρ·u",
                     "redundancy (Qp)", "shares mass with", "dropped"], rows))
    ref = methods.get("reference")
    if ref:
        exact, projected = ref["exact"], ref["projected"]
        part += ("<h3>The paper's setting</h3><p>Its pairwise PMI on sequence "
                 "log-likelihoods, shifted by |λ_min| I = "
                 f"{ref['shift']:.3g} to make it PSD, u = S·1 at rho = {exact['rho']:g}. Its "
                 "code solves the equality-constrained system and projects the result onto "
                 "the simplex; taskpgm minimizes the same energy exactly (under the run's "
                 f"caps). Energy: exact {exact['energy']:.6f}, projected "
                 f"{projected['energy']:.6f}.</p>"
                 + table(["task", "exact", "projected (their code)"],
                         [(t, exact["weights"][t], projected["weights"][t]) for t in tasks]))
    return part + "</section>"


def _why_mixmin(relations: Any, main: dict[str, Any]) -> str:
    """MixMin's weights explained by its inputs: each expert's mean P(gold) on its own task's
    probe items and on the target's, and the loss's marginal value of its data."""
    from taskpgm.weights import mixmin_inputs

    tasks = relations.tasks
    gold, task_of, w = mixmin_inputs(relations)
    p = np.array([main["weights"][t] for t in tasks])
    mix = p @ gold
    marginal = gold @ (w / mix)  # -dL/dp_i: equal (= 1) for every task with weight
    spans = main.get("intervals", {}).get("tasks", {})
    rows = []
    for i, task in enumerate(tasks):
        own = task_of == i
        span = spans.get(task)
        rows.append((task, p[i], f"[{span['lo']:.3f}, {span['hi']:.3f}]" if span else "–",
                     float(gold[i, own].mean()) if own.any() else None,
                     float((w * gold[i]).sum() / w.sum()), float(marginal[i])))
    text = ("<p>MixMin chooses the mixture of the experts whose ensemble Σ p_i P_i(gold | x) "
            "predicts the target's probe items best (the mean over its tasks of −log of it). "
            "At the optimum every expert with weight has the same marginal value "
            "Σ_x w_x P_i(gold | x) / (Σ_j p_j P_j(gold | x)) = 1, and one below 1 gets none. "
            "It assumes training on the mixture behaves like the ensemble of the experts "
            "(docs/design.md, \"MixMin\").</p>")
    return ("<section id='why'><h2>Why each task gets its weight</h2>" + text
            + table(["task", "weight", "5–95%", "P(gold), own items", "P(gold), target",
                     "marginal value"], rows) + "</section>")


def _evaluation(files: RunDir, summary: Sequence[dict[str, Any]]) -> str:
    if not files.has_evaluation():
        return ("<section id='evaluation'><h2>Evaluation</h2><p>The evaluation stage has not "
                "run (evaluation.enabled is false or the run stopped before it).</p></section>")

    rows = files.read_evaluation_rows()
    has_logprob = bool(rows) and rows[0].get("logprob") not in (None, "")  # older runs lack it
    lrows = [(e["method"], e["split"], e["seeds"], e["mean"], e["lo"], e["hi"], e.get("diff"),
              e.get("diff_lo"), e.get("diff_hi"))
             for e in (summarize(rows, metric="logprob") if has_logprob else [])]
    task_rows = []  # the same summary, one task at a time
    for task in sorted({r["task"] for r in rows}):
        for e in summarize([r for r in rows if r["task"] == task]):
            task_rows.append((e["method"], e["split"], task, e["seeds"], e["mean"], e["lo"],
                              e["hi"], e.get("diff"), e.get("diff_lo"), e.get("diff_hi")))
    task_rows.sort(key=lambda row: (row[0], row[1], row[2]))
    srows = [(e["method"], e["split"], e["seeds"], e["mean"], e["lo"], e["hi"], e.get("diff"),
              e.get("diff_lo"), e.get("diff_hi")) for e in summary]
    return ("<section id='evaluation'><h2>Evaluation</h2>"
            + f"<p class='seed-note'>{html.escape(seed_note(summary))}</p>"
            + figure("evaluation", evaluation_figure(summary))
            + table(["method", "split", "seeds", "accuracy", "95% lo", "95% hi",
                     "minus uniform", "95% lo", "95% hi"], srows)
            + ("<h3>Gold log-probability</h3><p>The gold choice's log-probability under "
               "the choice distribution (higher is better), a continuous score with less "
               "noise than accuracy.</p>"
               + table(["method", "split", "seeds", "gold log-prob", "95% lo", "95% hi",
                        "minus uniform", "95% lo", "95% hi"], lrows) if lrows else "")
            + "<h3>Per task</h3>"
            + table(["method", "split", "task", "seeds", "accuracy", "95% lo", "95% hi",
                     "minus uniform", "95% lo", "95% hi"], task_rows)
            + "</section>")
