"""Every report format stays valid and inert whatever the strings user code supplies: ids,
texts, messages, parameters with lone surrogates, controls, newlines, markup, bad mathtext."""

from __future__ import annotations

import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcheck import report
from gradcheck.result import STATUSES
from gradcheck.runall import Run
from gradcheck.runner import FormulaResult, Settings
from gradcheck.safetext import one_line, printable

HOSTILE = ["\ud800", "\udc80", "\x1b[31m", "\x1b]0;title\x07", "\x00", "\n", "\r\n", "\t",
           "|", "`", "```", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
           "&amp;", "&", "$\\undefinedmacro{x}$", "]]>", "<!--", "\u2028", "\ufffe", "'", '"',
           "*bold*", "_em_", "[a](javascript:alert(1))", "</details>", "\\", "\x7f", "\x85",
           "é", "𝛁"]
hostile = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=3)), max_size=6).map(
    "".join)


@st.composite
def results(draw):
    wrt, name = draw(hostile), draw(hostile)
    status = draw(st.sampled_from(STATUSES))
    c = {"shapes": {wrt: [1, 2]}, "params": {name: draw(hostile), "k": 2},
         "diagnosis": draw(hostile), "message": draw(hostile), "max_rel_error": 0.5,
         "worst_index": [0, 1], "status": status, "mismatches": 1, "checked": 2,
         "abs_error": [[0.0, 0.5]]}
    return FormulaResult(
        id=draw(hostile) + f"#{draw(st.integers(0, 10**6))}", derivation=draw(hostile), wrt=wrt,
        variant=draw(st.sampled_from(["reference", "as-written"])),
        expect=draw(st.sampled_from(["pass", "fail", "nonsmooth"])), source=draw(hostile),
        text=draw(hostile), status=status, cases=3, max_rel_error=0.5,
        counterexample=draw(st.none() | st.just(c)), message=draw(hostile),
        coverage={draw(hostile): 3})


runs = st.lists(results(), min_size=1, max_size=3, unique_by=lambda r: r.id).map(
    lambda rs: Run(Settings(examples=3), rs))
fuzz = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def controls(text: str) -> set[str]:
    return {c for c in text if unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t"}


@fuzz
@given(run=runs)
def test_table_is_printable_one_row_per_formula(run):
    text = report.render_table(run)
    text.encode("utf-8")
    assert controls(text) == set()
    lines = text.splitlines()
    rows = lines[2:lines.index("")]  # header, rule, one row per formula, a blank line
    assert len(rows) == len(run.results)
    for r, row in zip(run.results, rows, strict=True):
        assert row.startswith(one_line(r.id))


@fuzz
@given(run=runs)
def test_json_is_valid_utf8_json(run):
    text = report.render_json(run)
    loaded = json.loads(text.encode("utf-8"))
    assert [f["id"] for f in loaded["formulas"]] == [printable(r.id) for r in run.results]
    json.dumps(loaded, ensure_ascii=False).encode("utf-8")  # no lone surrogate, even escaped


@fuzz
@given(run=runs)
def test_junit_parses_and_names_every_formula(run):
    root = ET.fromstring(report.render_junit(run).encode("utf-8"))
    assert [c.get("name") for c in root.iter("testcase")] == [printable(r.id)
                                                              for r in run.results]


ALLOWED_MD_TAGS = {"details", "/details", "summary", "/summary", "code", "/code"}


def markdown_outside_fences(text: str) -> list[str]:
    out, fence = [], None
    for line in text.splitlines():
        if fence is None and re.match(r"^`{3,}$", line):
            fence = line
        elif fence is not None and line == fence:
            fence = None
        elif fence is None:
            out.append(line)
    assert fence is None, "a code fence never closed"
    return out


@fuzz
@given(run=runs)
def test_markdown_is_inert_and_one_row_per_formula(run):
    text = report.render_markdown(run)
    text.encode("utf-8")
    assert controls(text) == set()
    lines = markdown_outside_fences(text)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| formula")]
    assert len(rows) == len(run.results)
    for row in rows:
        # cells are separated by unescaped pipes only
        assert len(re.findall(r"(?<!\\)\|", row)) == len(report.COLUMNS) + 1, row
    for line in lines:  # no HTML but our own tags (code spans are literal)
        line = re.sub(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)", "", line)
        for tag in re.findall(r"(?<!\\)<(/?[A-Za-z][A-Za-z0-9]*)", line):
            assert tag in ALLOWED_MD_TAGS, line


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.cells: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.cells.append(data)


PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "small", "b",
             "i", "table", "tr", "th", "td", "section", "code", "span", "pre", "figure"}


@fuzz
@given(run=runs)
def test_html_is_inert_and_holds_every_id(run):
    page = report.render_html(run, plots=False)  # the plots' own test is below (slow)
    page.encode("utf-8")
    parser = Tags()
    parser.feed(page)
    assert parser.tags <= PAGE_TAGS, parser.tags - PAGE_TAGS
    text = "".join(parser.cells)
    for r in run.results:
        assert printable(r.id) in text


def test_html_with_plots_survives_bad_mathtext_and_surrogates():
    pytest.importorskip("matplotlib")
    c = {"shapes": {"$\\undefinedmacro{x}$": [1, 2]}, "params": {"p": "\udc80"},
         "diagnosis": "$\\frac{$", "message": "", "max_rel_error": 0.5, "worst_index": [0, 1],
         "status": "fail", "mismatches": 1, "checked": 2, "abs_error": [[0.0, 0.5]]}
    r = FormulaResult("bad$\\undefinedmacro{x}$\udc80", "bad", "$\\undefinedmacro{x}$",
                      "reference", "pass", "$\\oops{", "$\\undefinedmacro{x}$", status="fail",
                      cases=1, max_rel_error=0.5, counterexample=c, case_errors=[0.5])
    page = report.render_html(Run(Settings(), [r]))
    page.encode("utf-8")
    assert "<svg" in page  # the histogram and the heat map were drawn
    assert "\\udc80" in page
