"""Renderers for a run: terminal table, JSON (schema gradcheck-report/1), Markdown, JUnit XML.

Also the element-wise error grid that ``cli.py explain`` prints for a counterexample.
"""

from __future__ import annotations

import glob
import html
import json
import math
import os
import platform
import re
import shlex
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from gradcheck.compare import RULE
from gradcheck.result import STATUSES, CaseResult
from gradcheck.runall import Run
from gradcheck.runner import FormulaResult
from gradcheck.safetext import markdown_code, markdown_inline, one_line, printable, valid

SCHEMA = "gradcheck-report/1"


def unwritable(path: str | os.PathLike[str]) -> str | None:
    """Why a report cannot be written to ``path`` (checked before a run), or None."""
    target = Path(os.path.realpath(path) if os.path.islink(path) else path)  # a link's target
    if target.is_dir():
        return f"{str(path)!r} is a directory; give a file name"
    if target.exists() and not target.is_file():  # a device or FIFO: written to directly
        return None if os.access(target, os.W_OK) else f"{str(path)!r} is not writable"
    folder = target.parent
    if not folder.exists():
        return f"directory {str(folder)!r} does not exist"
    if not folder.is_dir():
        return f"{str(folder)!r} is not a directory"
    if target.exists() and not os.access(target, os.W_OK):
        return f"{str(target)!r} is not writable"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.probe."):
            pass
    except OSError as exc:
        return f"cannot create a file in {str(folder)!r}: {exc.strerror or type(exc).__name__}"
    return None


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write via a temporary file in the same folder, then rename: never half a file.

    A symlink is followed and its target replaced; a path that is not a regular file (a
    device such as /dev/null, a FIFO) is written to directly. The temporary file's name
    holds this process's id, so one left by a killed run is recognised and removed."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    _remove_stale(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{_TMP_PREFIX % target.name}"
                               f"{os.getpid()}-", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file would be, not mkstemp's 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_TMP_PREFIX = ".%s.gradcheck-"  # then the writer's process id, random letters, ".tmp"


def _remove_stale(target: Path) -> None:
    """Remove temporary files of ``target`` left by writers that no longer run."""
    prefix = _TMP_PREFIX % target.name
    for leftover in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = leftover.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def versions() -> dict[str, str]:
    import hypothesis

    import gradcheck

    return {"python": platform.python_version(), "numpy": np.__version__,
            "hypothesis": hypothesis.__version__, "gradcheck": gradcheck.__version__}


def summary(run: Run) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for r in run.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    counts["formulas"] = len(run.results)
    counts["unexpected"] = sum(not r.matches_expectation for r in run.results)
    return counts


def _finite_json(value: Any) -> Any:
    """Non-finite floats become null (strict JSON has no inf or nan)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


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
    return json.dumps(valid(_finite_json(to_dict(run))), indent=2, allow_nan=False) + "\n"


def cases_text(n: int) -> str:
    return f"{n} case" if n == 1 else f"{n} cases"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def short_counterexample(r: FormulaResult) -> str:
    """The case in one short line; for an error, the first line of its message."""
    c = r.counterexample
    if r.status == "error":
        first = r.message.strip().splitlines()[0] if r.message.strip() else ""
        return first if len(first) <= 60 else first[:59] + "…"
    if not c:
        return ""  # (a note under the table carries any message)
    shapes = " ".join(f"{k}{'×'.join(map(str, v)) or '()'}" for k, v in c["shapes"].items())
    params = " ".join(f"{k}={v}" for k, v in c["params"].items())
    return f"{shapes} {params}".strip()


def _verdict(r: FormulaResult) -> str:
    return "ok" if r.matches_expectation else f"UNEXPECTED (expected {r.expect})"


COLUMNS = ("formula", "cases", "max rel err", "status", "expectation", "counterexample")


def rows(run: Run) -> list[tuple[str, ...]]:
    return [  # user strings on one line, controls escaped (ESC would drive a terminal)
        (one_line(r.id), str(r.cases), _num(r.max_rel_error), r.status, _verdict(r),
         one_line(short_counterexample(r)))
        for r in run.results
    ]


def footer(run: Run) -> str:
    s = summary(run)
    noun = "formula" if s["formulas"] == 1 else "formulas"
    text = (f"{s['formulas']} {noun}: {s['pass']} pass, {s['fail']} fail, "
            f"{s['nonsmooth']} nonsmooth, {s['error']} error; "
            f"{s['unexpected']} not as expected ({run.seconds:.1f} s)")
    return text + (" - INTERRUPTED" if run.interrupted else "")


def placements(run: Run) -> list[str]:
    """Where the formulas of framework adapters ran: one line per framework and device."""
    where: dict[str, list[str]] = {}
    for r in run.results:
        if r.runs_on and r.derivation not in where.setdefault(r.runs_on, []):
            where[r.runs_on].append(r.derivation)
    return [f"ran on {k}: {', '.join(v)}" for k, v in where.items()]


_PAINT = {"pass": "32", "fail": "31", "nonsmooth": "33", "error": "35"}


def settings_line(run: Run) -> str:
    s = run.settings
    return (f"Checked in {s.dtype}: {s.examples} examples per formula, seed {s.seed}, "
            f"mode {s.mode}")


NONSMOOTH = ("nonsmooth: a case sat at a kink (the one-sided slopes disagree and the analytic "
             "value lies between them, as ReLU's at 0) or where differences cannot resolve "
             "the function; its error there means nothing. If the function has kinks, declare "
             "expect='nonsmooth' or draw cases away from them.")
MAX_REL = ("max rel err: the largest over the cases checked, up to and including the first "
           "failing one; explain shows the shrunk counterexample's own error.")


def notes(run: Run) -> list[str]:
    """What the table's figures and verdicts mean where a reader could misread them."""
    out = []
    if any(r.status == "nonsmooth" and not r.matches_expectation for r in run.results):
        out.append(NONSMOOTH)
    if any(r.counterexample and r.status == "fail" for r in run.results):
        out.append(MAX_REL)
    out += [f"{r.id}: {r.message}" for r in run.results
            if r.message and r.status != "error" and r.failing_result is None]
    return out


def render_table(run: Run, color: bool = False) -> str:
    table = [COLUMNS, *rows(run)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(table):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        if color and n:
            cells[3] = f"\x1b[{_PAINT.get(row[3], '0')}m{cells[3]}\x1b[0m"
            if not row[4].startswith("ok"):
                cells[4] = f"\x1b[1;31m{cells[4]}\x1b[0m"
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines += [f"Note: {one_line(n)}" for n in notes(run)]
    lines.append(settings_line(run))
    lines.append(footer(run))
    lines += placements(run)
    return "\n".join(lines) + "\n"


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(run: Run) -> str:
    lines = ["## gradcheck", "", f"**{footer(run)}**", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r, row in zip(run.results, rows(run), strict=True):
        cells = [markdown_code(r.id)] + [markdown_inline(c) for c in row[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Rule: `{RULE}`", "", settings_line(run)]
    lines += ["", *(f"- {markdown_inline(n)}" for n in notes(run))] if notes(run) else []
    for line in placements(run):
        lines += ["", f"Ran on {markdown_inline(line.removeprefix('ran on '))}"]
    for r in run.results:
        if not (r.counterexample or r.message):
            continue
        detail = printable(_detail(r))
        fence = _fence(detail)
        summary_id = html.escape(one_line(r.id))
        lines += ["", f"<details><summary><code>{summary_id}</code>: {r.status}</summary>", "",
                  fence, detail, fence, "", "</details>"]
    return "\n".join(lines) + "\n"


def _detail(r: FormulaResult) -> str:
    if r.failing_result is not None:
        text = r.failing_result.explain(criterion=False)
        if r.failing_case is not None and r.counterexample:
            text += "\n\n" + reproduction(r)
    elif r.counterexample:
        text = json.dumps(_finite_json(r.counterexample), indent=2)
    else:
        text = ""
    if r.message and r.message not in text:
        text = f"{text}\n{r.message}" if text else r.message
    return text


def reproduction(r: FormulaResult, file: str | None = None) -> str:
    """The counterexample's values and the Python that checks it again (a case too large
    to write out is read from ``file``, else from the .npz its record names)."""
    from gradcheck import repro

    c = r.counterexample or {}
    if r.failing_case is None or "inputs" not in c:
        return ""
    meta = {k: c.get(k) for k in ("wrt", "seed", "mode", "dtype", "module")}
    meta["id"] = r.id
    upstream = None if r.failing_result is None else r.failing_result.upstream
    file = file or c.get("npz")
    if file is None and repro.too_large(r.failing_case, upstream):
        return (f"Values: too large to print; save them with: gradcheck explain "
                f"{shlex.quote(r.id)} --module {shlex.quote(str(c.get('module')))} "
                "--save-case FILE.npz")
    return (f"Values:\n{repro.printout(r.failing_case, upstream)}\n\nReproduce:\n"
            + repro.snippet(meta, r.failing_case, upstream, file))


def _xml(text: str) -> str:
    """Text that XML 1.0 can hold: controls and lone surrogates as visible escapes."""
    return printable(text)


def render_junit(run: Run) -> str:
    s = summary(run)
    failures = sum(not r.matches_expectation and r.status != "error" for r in run.results)
    suites = ET.Element("testsuites", name="gradcheck")
    suite = ET.SubElement(suites, "testsuite", name="gradcheck", tests=str(s["formulas"]),
                          failures=str(failures), errors=str(s["error"]), skipped="0",
                          time=f"{run.seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for key, value in (("schema", SCHEMA), ("rule", RULE), ("examples", run.settings.examples),
                       ("seed", run.settings.seed), ("mode", run.settings.mode),
                       ("dtype", run.settings.dtype), ("interrupted", run.interrupted)):
        ET.SubElement(props, "property", name=key, value=str(value))
    for r in run.results:
        case = ET.SubElement(suite, "testcase", classname=_xml(f"gradcheck.{r.derivation}"),
                             name=_xml(r.id), time=f"{r.seconds:.3f}")
        props = ET.SubElement(case, "properties")
        for key in ("derivation", "wrt", "variant", "expect", "dtype", "status",
                    "matches_expectation", "cases", "max_rel_error", "median_rel_error"):
            ET.SubElement(props, "property", name=key, value=_xml(str(getattr(r, key))))
        ET.SubElement(props, "property", name="coverage", value=json.dumps(r.coverage))
        ET.SubElement(props, "property", name="counterexample",
                      value=_xml(short_counterexample(r) or "-"))
        if r.status == "error":
            first = r.message.strip().splitlines()[0] if r.message.strip() else "error"
            ET.SubElement(case, "error", message=_xml(first)).text = _xml(_detail(r))
        elif not r.matches_expectation:
            msg = f"expected {r.expect}, got {r.status} over {cases_text(r.cases)}"
            ET.SubElement(case, "failure", message=_xml(msg)).text = _xml(_detail(r) or msg)
        elif r.expect != "pass":
            ET.SubElement(case, "system-out").text = _xml(
                f"expected {r.expect} and got it:\n{_detail(r)}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def render_html(run: Run, plots: bool = True) -> str:
    from gradcheck.html import render_html as page

    return page(valid(to_dict(run)), plots=plots)


RENDERERS = {"table": render_table, "json": render_json, "markdown": render_markdown,
             "junit": render_junit, "html": render_html}


def error_grid(result: CaseResult, max_side: int = 12, max_slices: int = 8) -> str:
    """Relative error per element, one 2-D grid per leading index: '.' agrees, 'k' kink.

    Larger inputs are cut to ``max_side`` rows and columns and ``max_slices`` slices.
    """
    if result.rel_error is None or result.failed is None:
        return "(no element-wise data: the case was checked along random directions)"
    shape = (1,) * max(0, 2 - result.rel_error.ndim) + result.rel_error.shape
    rel, failed = result.rel_error.reshape(shape), result.failed.reshape(shape)
    kinked = (np.zeros(shape, bool) if result.kinked is None else result.kinked.reshape(shape))
    rows_, cols = shape[-2:]
    out = [f"Relative error of the gradient in {result.wrt!r}, shape "
           f"{tuple(result.rel_error.shape)}, where analytic and numeric disagree "
           "('.' agrees, 'k' at a kink):"]
    for n, lead in enumerate(np.ndindex(*shape[:-2])):
        if n == max_slices:
            out.append(f"... {math.prod(shape[:-2]) - n} more slices")
            break
        if lead:
            out.append(f"{result.wrt}[{', '.join(map(str, lead))}, :, :]")
        for i in range(min(rows_, max_side)):
            cells = ["k" if kinked[lead][i, j] else f"{rel[lead][i, j]:.2g}"
                     if failed[lead][i, j] else "." for j in range(min(cols, max_side))]
            more = " ..." if cols > max_side else ""
            out.append("  " + " ".join(c.rjust(7) for c in cells) + more)
        if rows_ > max_side:
            out.append(f"  ... {rows_ - max_side} more rows")
    return "\n".join(out)
