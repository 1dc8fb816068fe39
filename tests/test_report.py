"""The renderers: JSON schema gradcheck-report/1, JUnit XML, Markdown, table, error grid."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from gradcheck import report
from gradcheck.declare import collect_formulas
from gradcheck.result import CaseResult
from gradcheck.runall import Run, run_all
from gradcheck.runner import FormulaResult, Settings

FIXTURES = Path(__file__).parent / "fixtures"
MODULES = [str(FIXTURES / f"{name}.py") for name in ("good", "raising", "nonsmooth", "broken")]
IDS = ["fx_cube.dx[reference]", "fx_relu.dx[reference]", "fx_sin.dx[as-written]",
       "fx_sin.dx[reference]", "fx_square.dx[as-written]", "fx_square.dx[reference]"]
FORMULA_KEYS = {"id", "derivation", "wrt", "variant", "expect", "status", "matches_expectation",
                "cases", "max_rel_error", "median_rel_error", "counterexample", "coverage"}


@pytest.fixture(scope="module")
def run() -> Run:
    return run_all(collect_formulas(MODULES), Settings(examples=10, seed=7))


def test_fixture_run_has_every_status(run):
    assert [r.id for r in run.results] == IDS
    assert {r.status for r in run.results} == {"pass", "fail", "nonsmooth", "error"}


def test_json_schema(run):
    data = json.loads(report.render_json(run))
    assert data["schema"] == "gradcheck-report/1"
    assert data["rule"] and data["interrupted"] is False and data["ok"] is False
    assert data["summary"] == {"pass": 2, "fail": 2, "nonsmooth": 1, "error": 1,
                               "formulas": 6, "unexpected": 2}
    settings = data["settings"]
    assert (settings["examples"], settings["seed"], settings["mode"], settings["dtype"]) == (
        10, 7, "auto", "float64")
    assert set(settings["versions"]) >= {"python", "numpy", "hypothesis", "gradcheck"}
    by_id = {f["id"]: f for f in data["formulas"]}
    assert list(by_id) == IDS
    by_formula = {f.id: f for f in collect_formulas(MODULES)}
    for f in data["formulas"]:
        assert set(f) >= FORMULA_KEYS, f["id"]
        classified = by_formula[f["id"]].derivation.classify is not None
        assert sum(f["coverage"].values()) == (f["cases"] if classified else 0), f["id"]
        c = f["counterexample"]
        assert c is None or set(c) >= {"shapes", "params", "max_rel_error", "worst_index",
                                       "diagnosis"}
    assert by_id["fx_square.dx[reference]"]["counterexample"] is None
    wrong = by_id["fx_square.dx[as-written]"]
    assert (wrong["status"], wrong["expect"], wrong["matches_expectation"]) == ("fail", "fail",
                                                                                 True)
    assert wrong["counterexample"]["shapes"] == {"x": [1, 1]}
    assert wrong["counterexample"]["params"] == {"k": 1}
    assert isinstance(wrong["counterexample"]["worst_index"], list)
    broken = by_id["fx_cube.dx[reference]"]
    assert broken["status"] == "fail" and broken["matches_expectation"] is False
    raised = by_id["fx_sin.dx[as-written]"]
    assert raised["status"] == "error" and "boom from the raising fixture" in raised["message"]


def test_json_is_strict_even_with_non_finite_errors(run):
    odd = FormulaResult("x.dx[reference]", "x", "x", "reference", "pass", "", "",
                        status="fail", cases=1, max_rel_error=float("inf"),
                        median_rel_error=float("nan"))
    text = report.render_json(Run(run.settings, [odd]))
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON {name}"))
    assert data["formulas"][0]["max_rel_error"] is None


def test_junit_has_one_testcase_per_formula_with_properties(run):
    root = ET.fromstring(report.render_junit(run))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == IDS
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert set(props) >= {"status", "expect", "variant", "cases", "max_rel_error",
                              "coverage", "matches_expectation"}
        json.loads(props["coverage"])
    outcome = {c.get("name"): [child.tag for child in c if child.tag != "properties"]
               for c in cases}
    assert outcome["fx_cube.dx[reference]"] == ["failure"]
    assert outcome["fx_sin.dx[as-written]"] == ["error"]
    assert outcome["fx_square.dx[as-written]"] == ["system-out"]  # failed, as expected
    assert outcome["fx_square.dx[reference]"] == []


def test_junit_survives_control_characters_in_a_message(run):
    odd = FormulaResult("x.dx[reference]", "x", "x", "reference", "pass", "", "",
                        message="bad \x00\x1b[31m byte")
    root = ET.fromstring(report.render_junit(Run(run.settings, [odd])))
    assert root.find("testsuite/testcase/error") is not None


def test_markdown_has_a_table_row_per_formula(run):
    text = report.render_markdown(run)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == IDS
    assert all(row.count(" | ") == len(report.COLUMNS) - 1 for row in rows)
    assert "gradcheck-report" not in text and "Rule:" in text
    assert text.count("<details>") == 4  # the fail, the broken, the kink and the error
    assert "boom from the raising fixture" in text


def test_table_columns_colour_and_footer(run):
    plain = report.render_table(run)
    assert "\x1b[" not in plain
    lines = plain.splitlines()
    assert lines[0].split() == ["formula", "cases", "max", "rel", "err", "status",
                                "expectation", "counterexample"]
    assert [line.split()[0] for line in lines[2:8]] == IDS
    assert "UNEXPECTED (expected pass)" in plain
    assert lines[-1].startswith("6 formulas: 2 pass, 2 fail, 1 nonsmooth, 1 error; "
                                "2 not as expected")
    coloured = report.render_table(run, color=True)
    assert "\x1b[31mfail" in coloured and "\x1b[1;31mUNEXPECTED" in coloured


def test_short_counterexample_of_an_error_is_its_message(run):
    r = {r.id: r for r in run.results}["fx_sin.dx[as-written]"]
    assert report.short_counterexample(r).startswith("vjp raised ValueError: boom")


def test_interrupted_run_is_marked():
    run = Run(Settings(), [], interrupted=True)
    assert "INTERRUPTED" in report.render_table(run)
    assert json.loads(report.render_json(run))["interrupted"] is True


def test_error_grid_per_2d_slice():
    rel = np.zeros((2, 2, 3))
    failed = np.zeros((2, 2, 3), bool)
    rel[1, 0, 2], failed[1, 0, 2] = 0.5, True
    kinked = np.zeros((2, 2, 3), bool)
    kinked[0, 1, 1] = True
    grid = report.error_grid(CaseResult("fail", "x", rel_error=rel, failed=failed,
                                        kinked=kinked))
    lines = grid.splitlines()
    assert "x[0, :, :]" in lines and "x[1, :, :]" in lines
    assert lines[lines.index("x[1, :, :]") + 1].split() == [".", ".", "0.5"]
    assert lines[lines.index("x[0, :, :]") + 2].split() == [".", "k", "."]


def test_error_grid_cuts_large_inputs_and_explains_directional_mode():
    big = np.zeros((20, 30))
    grid = report.error_grid(CaseResult("pass", "W", rel_error=big, failed=big > 0,
                                        kinked=big > 0))
    assert "... 8 more rows" in grid and grid.splitlines()[1].endswith(" ...")
    assert "random directions" in report.error_grid(CaseResult("fail", "W"))


def test_write_atomic_replaces_the_whole_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old, longer content")
    report.write_atomic(target, "new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]
