"""The pytest plugin, driven through pytester."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import hypothesis.extra.numpy  # noqa: F401  (pytester's in-process runs must not re-import
import numpy  # noqa: F401                     numpy: it cannot be loaded twice in a process)
import pytest

import gradcheck.plugin  # noqa: F401
import gradcheck.report  # noqa: F401
import gradcheck.runner  # noqa: F401
from tests.conftest import FIXTURES, signal_when_marked

FORMULAS = '''
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from gradcheck import Derivation

cases = arrays(np.float64, st.integers(1, 3), elements=st.floats(-3, 3)).map(lambda x: {"x": x})

sine = Derivation("sine", lambda x: np.sin(x), cases, batched=True)
sine.formula("x", lambda dy, x: dy * np.cos(x), text="d sin = cos")
sine.formula("x", lambda dy, x: -dy * np.cos(x), variant="as-written", expect="fail", text="-cos")

square = Derivation("square", lambda x: x ** 2, cases, batched=True)
square.formula("x", lambda dy, x: dy * x, text="x (wrong, expected to pass)")
square.formula("x", lambda dy, x: 2 * dy * x, variant="as-written", expect="fail", text="2x")
'''

IDS = ["sine.dx[as-written]", "sine.dx[reference]", "square.dx[as-written]",
       "square.dx[reference]"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.mkdir("derivations")
    pytester.path.joinpath("derivations", "calc.py").write_text(FORMULAS)
    pytester.makeini("[pytest]\ngradcheck_examples = 10\n")
    return pytester


def test_help_lists_the_option_group(pytester: pytest.Pytester) -> None:
    out = pytester.runpytest("--help").stdout.str()
    for option in ["--gradcheck ", "--gradcheck-module", "--gradcheck-examples",
                   "--gradcheck-seed", "--gradcheck-mode", "--gradcheck-report",
                   "gradcheck_modules", "gradcheck_examples"]:
        assert option in out


def test_inert_without_the_flag(project: pytest.Pytester) -> None:
    result = project.runpytest("--collect-only", "-q")
    assert "sine" not in result.stdout.str()


def test_collects_formulas_with_readable_sorted_node_ids(project: pytest.Pytester) -> None:
    result = project.runpytest("--gradcheck", "--collect-only", "-q")
    lines = [ln for ln in result.stdout.lines if "::" in ln]
    assert lines == [f"derivations/calc.py::{i}" for i in IDS]


def test_pass_fail_and_strict_xfail(project: pytest.Pytester) -> None:
    result = project.runpytest("--gradcheck", "-rA")
    result.assert_outcomes(passed=1, failed=2, xfailed=1)
    out = result.stdout.str()
    # the failing formula's report is the engine's explanation, not a traceback
    assert "square.dx[reference]: expected pass, got fail" in out
    assert "Mismatched elements: 1 / 1" in out and "Diagnosis:" in out
    assert "gradcheck/runner.py" not in out
    # a known-wrong formula that passes fails the run (strict xfail)
    assert "XPASS(strict)" in out and "square.dx[as-written]" in out


def test_terminal_summary_is_the_per_formula_table(project: pytest.Pytester) -> None:
    out = project.runpytest("--gradcheck").stdout.str()
    assert "gradcheck: per-formula summary" in out
    assert re.search(r"sine\.dx\[reference\]\s+10\s+\S+\s+pass\s+ok", out), out
    assert re.search(r"square\.dx\[as-written\]\s+10\s+\S+\s+pass\s+UNEXPECTED", out), out


def _report(pytester: pytest.Pytester, *args: str) -> dict:
    target = pytester.path / "report.json"
    pytester.runpytest_subprocess("--gradcheck", f"--gradcheck-report={target}", *args)
    return json.loads(target.read_text())


@pytest.mark.slow
def test_json_report_has_the_cli_schema(project: pytest.Pytester) -> None:
    report = _report(project)
    assert report["schema"] == "gradcheck-report/1"
    assert [f["id"] for f in report["formulas"]] == IDS
    by_id = {f["id"]: f for f in report["formulas"]}
    assert by_id["square.dx[reference]"]["status"] == "fail"
    assert by_id["square.dx[reference]"]["counterexample"]["diagnosis"]
    assert report["settings"]["examples"] == 10 and report["summary"]["unexpected"] == 2


def test_junit_xml_carries_the_properties(project: pytest.Pytester) -> None:
    project.runpytest("--gradcheck", "--junitxml=out.xml")
    tree = ET.parse(project.path / "out.xml")
    props = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in tree.iter("testcase")
    }
    assert props["sine.dx[reference]"]["status"] == "pass"
    assert props["sine.dx[reference]"]["cases"] == "10"
    assert json.loads(props["square.dx[reference]"]["gradcheck_result"])["status"] == "fail"


@pytest.mark.slow
def test_same_summary_and_report_under_xdist(project: pytest.Pytester) -> None:
    serial = _report(project)
    parallel = _report(project, "-n", "2")
    for r in serial["formulas"] + parallel["formulas"]:
        r.pop("seconds")
    assert serial["formulas"] == parallel["formulas"]
    assert serial["summary"] == parallel["summary"]


def test_module_option_and_unknown_module(project: pytest.Pytester) -> None:
    project.path.joinpath("other.py").write_text(FORMULAS.replace('"sine"', '"sine2"'))
    result = project.runpytest("--gradcheck", "--gradcheck-module=other.py", "--collect-only",
                               "-q")
    assert "other.py::sine2.dx[reference]" in result.stdout.str()
    assert "derivations/calc.py" not in result.stdout.str()
    bad = project.runpytest("--gradcheck", "--gradcheck-module=no_such_module_xyz")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "cannot find module 'no_such_module_xyz'" in bad.stderr.str()


def test_broken_module_is_a_collection_error_naming_it(project: pytest.Pytester) -> None:
    project.path.joinpath("derivations", "broken.py").write_text("raise RuntimeError('boom')\n")
    result = project.runpytest("--gradcheck")
    out = result.stdout.str()
    assert "broken.py" in out and "failed to import: RuntimeError: boom" in out
    assert result.ret != 0


def test_selecting_one_formula_by_node_id(project: pytest.Pytester) -> None:
    result = project.runpytest("--gradcheck", "derivations/calc.py::sine.dx[reference]")
    result.assert_outcomes(passed=1)


def _readme_example() -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    match = re.search(r"<!-- own-suite-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README has no own-suite example"
    return match.group(1)


def test_readme_own_suite_example_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme_example=_readme_example())
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1 and not outcomes.get("failed"), result.stdout.str()


def test_bad_ini_value_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\ngradcheck_mode = sideways\ngradcheck_examples = 10\n")
    result = project.runpytest("--gradcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "mode must be one of" in result.stderr.str() and "sideways" in result.stderr.str()


def test_unwritable_report_path_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--gradcheck", "--gradcheck-report=no/such/dir/r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--gradcheck-report: directory 'no/such/dir' does not exist" in result.stderr.str()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_writes_an_interrupted_report(pytester: pytest.Pytester, sig) -> None:
    pytester.path.joinpath("slow.py").write_text((FIXTURES / "slow.py").read_text())
    target = pytester.path / "r.json"
    signal_when_marked(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--gradcheck",
         "--gradcheck-module=slow.py", "--gradcheck-examples=100000",
         f"--gradcheck-report={target}"], pytester.path / "started", sig, cwd=pytester.path)
    report = json.loads(target.read_text())
    assert report["interrupted"] is True and report["ok"] is False
    assert [f["id"] for f in report["formulas"]] == ["a_quick.dx[reference]"]


def test_importing_the_plugin_loads_neither_numpy_nor_hypothesis_nor_a_framework() -> None:
    code = ("import sys, gradcheck.plugin; "
            "print(sorted(m for m in ('numpy', 'hypothesis', 'click', 'torch', 'jax')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_report_only_items_pass_and_the_summary_says_what_each_did(
        project: pytest.Pytester) -> None:
    result = project.runpytest("--gradcheck", "--gradcheck-report-only")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert re.search(r"square\.dx\[reference\]\s+\d+\s+\S+\s+fail\s+UNEXPECTED", out), out
    project.makeini("[pytest]\ngradcheck_examples = 10\ngradcheck_report_only = true\n")
    project.runpytest("--gradcheck").assert_outcomes(passed=4)
