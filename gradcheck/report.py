"""Renderers for a run: terminal table, JSON (schema gradcheck-report/1), Markdown, JUnit XML."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from gradcheck.compare import RULE
from gradcheck.runner import FormulaResult, Run

SCHEMA = "gradcheck-report/1"


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write via a temporary file in the same folder, then rename: never half a file."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions() -> dict[str, str]:
    import hypothesis
    import numpy

    import gradcheck

    return {"python": platform.python_version(), "numpy": numpy.__version__,
            "hypothesis": hypothesis.__version__, "gradcheck": gradcheck.__version__}


def summary(run: Run) -> dict[str, int]:
    counts = {s: 0 for s in ("pass", "fail", "nonsmooth", "error")}
    for r in run.results:
        counts[r.status] += 1
    counts["formulas"] = len(run.results)
    counts["unexpected"] = sum(not r.matches_expectation for r in run.results)
    return counts


def to_dict(run: Run) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "interrupted": run.interrupted,
        "ok": run.ok,
        "summary": summary(run),
        "rule": RULE,
        "settings": {
            "examples": run.settings.examples, "seed": run.settings.seed,
            "mode": run.settings.mode, "dtype": run.settings.dtype, "versions": versions(),
        },
        "seconds": run.seconds,
        "formulas": [r.to_dict() for r in run.results],
    }


def render_json(run: Run) -> str:
    return json.dumps(to_dict(run), indent=2, sort_keys=False) + "\n"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def short_counterexample(r: FormulaResult) -> str:
    c = r.counterexample
    if not c:
        return r.message.splitlines()[0][:60] if r.message else ""
    shapes = " ".join(f"{k}{'×'.join(map(str, v)) or '()'}" for k, v in c["shapes"].items())
    params = " ".join(f"{k}={v}" for k, v in c["params"].items())
    return f"{shapes} {params}".strip()


def _verdict(r: FormulaResult) -> str:
    return "ok" if r.matches_expectation else f"UNEXPECTED (expected {r.expect})"


COLUMNS = ("formula", "cases", "max rel err", "status", "expectation", "counterexample")


def rows(run: Run) -> list[tuple[str, ...]]:
    return [
        (r.id, str(r.cases), _num(r.max_rel_error), r.status, _verdict(r), short_counterexample(r))
        for r in run.results
    ]


def footer(run: Run) -> str:
    s = summary(run)
    text = (f"{s['formulas']} formulas: {s['pass']} pass, {s['fail']} fail, "
            f"{s['nonsmooth']} nonsmooth, {s['error']} error; "
            f"{s['unexpected']} not as expected ({run.seconds:.1f} s)")
    return text + (" - INTERRUPTED" if run.interrupted else "")


def render_table(run: Run, color: bool = False) -> str:
    table = [COLUMNS, *rows(run)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    paint = {"pass": "32", "fail": "31", "nonsmooth": "33", "error": "35"}
    lines = []
    for n, row in enumerate(table):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        if color and n:
            cells[3] = f"\x1b[{paint[row[3]]}m{cells[3]}\x1b[0m"
            if not row[4].startswith("ok"):
                cells[4] = f"\x1b[1;31m{cells[4]}\x1b[0m"
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(footer(run))
    return "\n".join(lines) + "\n"


def render_markdown(run: Run) -> str:
    lines = ["## gradcheck", "", f"**{footer(run)}**", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows(run):
        cells = [c.replace("|", "\\|") for c in row]
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Rule: {RULE}", "",
              f"Settings: {run.settings.examples} examples, seed {run.settings.seed}, "
              f"mode {run.settings.mode}, {run.settings.dtype}"]
    failing = [r for r in run.results if r.counterexample or r.message]
    for r in failing:
        lines += ["", f"<details><summary><code>{r.id}</code>: {r.status}</summary>", "",
                  "```", _detail(r), "```", "</details>"]
    return "\n".join(lines) + "\n"


def _detail(r: FormulaResult) -> str:
    if r.failing_result is not None:
        return r.failing_result.explain()
    if r.counterexample:
        return json.dumps(r.counterexample, indent=2)
    return r.message


def render_junit(run: Run) -> str:
    s = summary(run)
    failures = sum(not r.matches_expectation and r.status != "error" for r in run.results)
    suite = ET.Element("testsuite", name="gradcheck", tests=str(s["formulas"]),
                       failures=str(failures), errors=str(s["error"]), time=f"{run.seconds:.3f}")
    for r in run.results:
        case = ET.SubElement(suite, "testcase", classname=f"gradcheck.{r.derivation}",
                             name=r.id, time=f"{r.seconds:.3f}")
        props = ET.SubElement(case, "properties")
        for key in ("status", "expect", "variant", "cases", "max_rel_error", "median_rel_error"):
            ET.SubElement(props, "property", name=key, value=str(getattr(r, key)))
        ET.SubElement(props, "property", name="coverage", value=json.dumps(r.coverage))
        if r.status == "error":
            ET.SubElement(case, "error", message=r.message.splitlines()[0] if r.message else
                          "error").text = _detail(r)
        elif not r.matches_expectation:
            msg = f"expected {r.expect}, got {r.status}"
            ET.SubElement(case, "failure", message=msg).text = _detail(r) if (
                r.counterexample) else msg
        elif r.expect != "pass":
            ET.SubElement(case, "system-out").text = f"expected {r.expect} and got it:\n" + (
                _detail(r))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


RENDERERS = {"table": render_table, "json": render_json, "markdown": render_markdown,
             "junit": render_junit}
