"""A self-contained HTML report (no network needed to open it), rendered from the JSON report.

Per formula: a histogram of relative errors over its cases with the tolerance marked; for a
failing formula a heat map of |analytic - numeric| over its minimal counterexample (one
panel per channel); the step-size curve of one case. Plots are matplotlib figures inlined
as SVG; without matplotlib the page keeps its tables and says how to get the plots.
"""

from __future__ import annotations

import html
import io
import shlex
from typing import Any

import numpy as np

MAX_PANELS = 8
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
.pass { background: #d8f5d8; } .fail { background: #f8d0d0; }
.nonsmooth { background: #fbefc4; } .error { background: #e8d0f0; }
.unexpected { font-weight: bold; color: #b00; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
pre { background: #f4f4f4; padding: 0.5em; overflow-x: auto; }
"""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    plt.rcParams["svg.hashsalt"] = "gradcheck"  # deterministic ids
    return plt


def _svg(plt: Any, fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def histogram(plt: Any, errors: list[float], rtol: float, title: str) -> str:
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    logs = np.log10(np.maximum(np.asarray(errors, dtype=float), 1e-18))
    ax.hist(logs, bins=30, color="#4a7ab7")
    ax.axvline(np.log10(rtol), color="#c00", linestyle="--", label=f"rtol {rtol:.1e}")
    ax.set_xlabel("log10(max relative error per case; exact 0 at -18)")
    ax.set_ylabel("cases")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _svg(plt, fig)


def heatmap(plt: Any, abs_error: list[Any], name: str) -> str:
    err = np.asarray(abs_error, dtype=float)
    grid = err.reshape((1,) * max(0, 2 - err.ndim) + err.shape)
    panels = grid.reshape(-1, *grid.shape[-2:])[:MAX_PANELS]
    lead = list(np.ndindex(*grid.shape[:-2]))[:MAX_PANELS] or [()]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels) + 0.8, 2.6),
                             squeeze=False)
    top = float(err.max()) or 1.0
    for ax, panel, idx in zip(axes[0], panels, lead, strict=False):
        im = ax.imshow(panel, cmap="magma_r", vmin=0, vmax=top)
        ax.set_title(f"{name}[{', '.join(map(str, idx))}, :, :]" if idx else name, fontsize=8,
                     parse_math=False)  # a user's name, not mathtext
        ax.set_xticks(range(panel.shape[1]))
        ax.set_yticks(range(panel.shape[0]))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="|analytic - numeric|")
    return _svg(plt, fig)


def sweep_plot(plt: Any, sweep: dict[str, Any], title: str) -> str:
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    errors = np.maximum(sweep["error"], 1e-18)
    ax.loglog(sweep["h"], errors, "o-", ms=3, color="#4a7ab7")
    ax.set_ylim(errors.min() / 10, errors.max() * 10)  # a flat curve stays flat
    ax.axvline(sweep["chosen_h"], color="#c00", linestyle="--",
               label=f"chosen h {sweep['chosen_h']:.1e}")
    ax.set_xlabel("step h")
    ax.set_ylabel("relative error")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _svg(plt, fig)


def _cell(text: Any, cls: str = "") -> str:
    return f'<td class="{html.escape(cls)}">{html.escape(str(text))}</td>'


def _span(status: str) -> str:
    return f"<span class='{html.escape(status)}'>{html.escape(status)}</span>"


def _figure(plt: Any, draw: Any, *args: Any) -> str:
    """One plot, or a line saying why it is missing: a plot never costs the page."""
    try:
        return f"<figure>{draw(plt, *args)}</figure>"
    except Exception as exc:
        plt.close("all")
        return f"<p><i>plot not drawn: {html.escape(f'{type(exc).__name__}: {exc}')}</i></p>"


def counterexample_text(formula_id: str, c: dict[str, Any]) -> str:
    """What is wrong, the case (shapes, parameters, values), and the Python to check it."""
    from gradcheck import repro

    shapes = ", ".join(f"{k} {tuple(v)}" for k, v in c.get("shapes", {}).items())
    params = ", ".join(f"{k}={v!r}" for k, v in c.get("params", {}).items())
    lines = [str(c.get("diagnosis") or c.get("message") or ""),
             f"Case: {shapes}" + (f"; {params}" if params else ""),
             f"Mode {c.get('mode')}, dtype {c.get('dtype')}, seed {c.get('seed')}; max relative "
             f"error of this case {c.get('max_rel_error', 0):.3g}"]
    if "inputs" in c and not repro.is_large(c):
        meta, case, upstream = repro.from_record(c, formula_id)
        lines += ["", repro.printout(case, upstream), "", repro.snippet(meta, case, upstream)]
    elif c.get("npz"):
        lines += ["", f"Values: {c['npz']} (check it again: explain {shlex.quote(formula_id)} "
                  f"--module {shlex.quote(str(c.get('module')))} --case "
                  f"{shlex.quote(c['npz'])})"]
    return "\n".join(lines)


def render_html(report: dict[str, Any], plots: bool = True) -> str:
    """The whole page from a ``gradcheck-report/1`` dict (its strings made printable by
    gradcheck.safetext); ``plots=False`` leaves the plots out (fast)."""
    plt = _pyplot() if plots else None
    rtol = float(np.sqrt(np.finfo(report["settings"].get("dtype", "float64")).eps))
    s = report["summary"]
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>gradcheck report</title>",
           f"<style>{STYLE}</style></head><body><h1>gradcheck report</h1>",
           f"<p>{s['formulas']} formulas: {s['pass']} pass, {s['fail']} fail, "
           f"{s['nonsmooth']} nonsmooth, {s['error']} error; {s['unexpected']} not as "
           f"expected{' (interrupted)' if report.get('interrupted') else ''}. Checked in "
           f"{html.escape(str(report['settings'].get('dtype', 'float64')))}: "
           f"{report['settings'].get('examples')} examples per formula, seed "
           f"{report['settings'].get('seed')}, mode {report['settings'].get('mode')}.</p>",
           f"<p><small>Rule: {html.escape(report['rule'])}</small></p>"]
    if plt is None and plots:
        out.append("<p><b>Plots need matplotlib:</b> <code>pip install 'gradcheck[report]'</code>"
                   " (in a checkout: <code>pip install -e '.[report]'</code>)</p>")
    out.append("<table><tr><th>formula</th><th>cases</th><th>max rel error</th>"
               "<th>status</th><th>expectation</th></tr>")
    for f in report["formulas"]:
        met = "as expected" if f["matches_expectation"] else f"UNEXPECTED (expected {f['expect']})"
        err = "-" if f["max_rel_error"] is None else f"{f['max_rel_error']:.2e}"
        out.append(f"<tr>{_cell(f['id'])}{_cell(f['cases'])}{_cell(err)}"
                   f"{_cell(f['status'], f['status'])}"
                   f"{_cell(met, '' if f['matches_expectation'] else 'unexpected')}</tr>")
    out.append("</table>")
    for f in report["formulas"]:
        out.append(f"<section><h2 id='{html.escape(f['id'])}'>{html.escape(f['id'])}</h2>")
        out.append(f"<p><code>{html.escape(f['text'])}</code> ({html.escape(f['source'])})"
                   f" &mdash; {_span(f['status'])}</p>")
        c = f.get("counterexample")
        if c:
            out.append(f"<pre>{html.escape(counterexample_text(f['id'], c))}</pre>")
        if f.get("message") and not c:
            out.append(f"<pre>{html.escape(f['message'])}</pre>")
        if plt is not None:
            if f.get("case_errors"):
                out.append(_figure(plt, histogram, f["case_errors"], rtol, "errors"))
            if c and c.get("abs_error") is not None and f["status"] == "fail":
                out.append(_figure(plt, heatmap, c["abs_error"], f["wrt"]))
            if f.get("sweep"):
                out.append(_figure(plt, sweep_plot, f["sweep"], "step-size curve"))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
