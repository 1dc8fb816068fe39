"""The command line, through click's CliRunner: every command, option and exit code."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

import gradcheck.runall as runall
import gradcheck.runner as runner
from gradcheck import cli
from gradcheck.declare import collect_formulas
from tests.conftest import FIXTURES, ROOT, without_seconds

GOOD, BROKEN, RAISING, NONSMOOTH = (str(FIXTURES / f"{n}.py")
                                    for n in ("good", "broken", "raising", "nonsmooth"))
CATALOGUE = len(collect_formulas(cli.builtin_modules()))


def invoke(*args: str, env: dict[str, str] | None = None, color: bool = False):
    return CliRunner(env=env).invoke(cli.main, list(args), catch_exceptions=False, color=color)


def report_of(result) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def ids_of(result) -> list[str]:
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------- list


def test_list_shows_the_catalogue_with_variant_expectation_and_source():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == CATALOGUE
    first = lines[0].split()
    assert first[:4] == ["conv2d.dW[as-written]", "as-written", "expect", "fail"]
    assert "Problem 3" in lines[0]


@pytest.mark.parametrize("patterns, expected", [
    (["linear.d*[reference]"], ["linear.dW[reference]", "linear.db[reference]",
                                "linear.dx[reference]"]),
    (["maxpool"], ["maxpool2d.dx[as-written]", "maxpool2d.dx[reference]"]),
    (["softmax_ce.dy[as-written]"], ["softmax_ce.dy[as-written]"]),
    (["conv2d.d?[as-written]", "softmax_ce.dy[as-written]"],
     ["conv2d.dW[as-written]", "conv2d.db[as-written]", "conv2d.dx[as-written]",
      "softmax_ce.dy[as-written]"]),
    (["linear.db", "*.db[*"], ["conv2d.db[as-written]", "conv2d.db[reference]",
                               "linear.db[as-written]", "linear.db[reference]"]),
])
def test_list_patterns_glob_substring_and_exact(patterns, expected):
    result = invoke("list", *patterns)
    assert result.exit_code == 0, result.output
    assert ids_of(result) == expected


def test_list_with_modules_by_path_and_by_dotted_name():
    """Naming modules checks those modules; --builtin adds the catalogue."""
    both = invoke("list", "-m", GOOD, "--module", "tests.fixtures.raising")
    assert both.exit_code == 0, both.output
    ids = ids_of(both)
    assert len(ids) == 4 and ids == sorted(ids)
    assert "fx_square.dx[as-written]" in ids and "fx_sin.dx[reference]" in ids
    with_catalogue = invoke("list", "-m", GOOD, "--builtin")
    assert len(ids_of(with_catalogue)) == CATALOGUE + 2
    only = invoke("list", "--no-builtin", "-m", "tests.fixtures.good")
    assert ids_of(only) == ["fx_square.dx[as-written]", "fx_square.dx[reference]"]
    assert "test fixture good.py" in only.stdout


def test_the_same_module_given_twice_is_loaded_once():
    result = invoke("list", "--no-builtin", "-m", GOOD, "-m", GOOD)
    assert result.exit_code == 0, result.output
    assert len(ids_of(result)) == 2


def test_unknown_pattern_suggests_close_names():
    result = invoke("list", "sofmax_ce")
    assert result.exit_code == 2
    assert "no formula matches 'sofmax_ce'" in result.stderr
    assert "did you mean" in result.stderr and "softmax_ce" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["check", "conv2d.dZ[reference]", "--examples", "5"],
                                  ["explain", "linaer.dW[reference]"]])
def test_unknown_formula_exits_2_with_suggestions(args):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "did you mean" in result.stderr
    assert ("conv2d.d" if args[0] == "check" else "linear.dW[reference]") in result.stderr


def test_no_builtin_and_no_module_is_a_usage_error():
    result = invoke("list", "--no-builtin")
    assert result.exit_code == 2 and "no modules to load" in result.stderr


# ---------------------------------------------------------------- bad modules: exit 2


@pytest.mark.parametrize("module, message", [
    (str(FIXTURES / "import_fails.py"), "RuntimeError: this fixture refuses to import"),
    ("tests.fixtures.import_fails", "RuntimeError: this fixture refuses to import"),
    ("no_such_module_for_gradcheck", "No module named 'no_such_module_for_gradcheck'"),
    (str(FIXTURES / "missing.py"), "does not exist"),
    (str(FIXTURES / "empty.py"), "defines no gradcheck.Derivation"),
])
@pytest.mark.parametrize("command", ["list", "check"])
def test_module_that_does_not_load_exits_2(command, module, message):
    result = invoke(command, "--no-builtin", "-m", module)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_module_with_a_syntax_error_exits_2(tmp_path):
    bad = tmp_path / "bad_syntax.py"
    bad.write_text("from gradcheck.declare import Derivation\ndef broken(:\n")
    result = invoke("check", "-m", str(bad))
    assert result.exit_code == 2, result.output
    assert "SyntaxError" in result.stderr and "Traceback" not in result.output


def test_module_whose_derivations_register_no_formula_exits_2():
    result = invoke("check", "--no-builtin", "-m", str(FIXTURES / "no_formulas.py"))
    assert result.exit_code == 2 and "no formulas found" in result.stderr


def test_duplicate_formula_ids_across_modules_exit_2():
    result = invoke("check", "-m", GOOD, "-m", str(FIXTURES / "duplicate.py"), "fx_",
                    "--examples", "3")
    assert result.exit_code == 2, result.output
    assert "duplicate formula id 'fx_square.dx[reference]'" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--examples", "0"], "--examples"), (["-n", "-4"], "--jobs"),
    (["--jobs", "0"], "--jobs"), (["--mode", "sideways"], "--mode"),
    (["--format", "xml"], "--format"), (["--seed", "abc"], "--seed"),
])
def test_bad_options_exit_2(args, message):
    result = invoke("check", "linear", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


# ---------------------------------------------------------------- check: exit 0 and 1


def test_check_exits_0_when_every_outcome_matches_the_expectation():
    result = invoke("check", "softmax", "--examples", "10")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:4]] == ["softmax_ce.dy[as-written]",
                                                        "softmax_ce.dy[reference]"]
    assert "fail" in lines[2] and "ok" in lines[2]
    assert lines[-1].startswith("2 formulas: 1 pass, 1 fail, 0 nonsmooth, 0 error; 0 not as")
    assert result.stderr == ""  # no progress when stderr is not a terminal


def test_check_exits_1_when_an_outcome_differs_from_its_expectation():
    result = invoke("check", "--no-builtin", "-m", BROKEN, "--examples", "10")
    assert result.exit_code == 1, result.output
    assert "UNEXPECTED (expected pass)" in result.stdout


def test_a_formula_that_raises_is_reported_as_error_next_to_the_others():
    result = invoke("check", "--no-builtin", "-m", GOOD, "-m", RAISING, "-m", NONSMOOTH,
                    "--format", "json", "--examples", "10")
    assert result.exit_code == 1, result.output
    data = report_of(result)
    status = {f["id"]: f["status"] for f in data["formulas"]}
    assert status == {"fx_relu.dx[reference]": "nonsmooth", "fx_sin.dx[as-written]": "error",
                      "fx_sin.dx[reference]": "pass", "fx_square.dx[as-written]": "fail",
                      "fx_square.dx[reference]": "pass"}
    raised = next(f for f in data["formulas"] if f["status"] == "error")
    assert "ValueError: boom from the raising fixture" in raised["message"]
    assert data["summary"]["unexpected"] == 1


def test_seed_mode_and_examples_reach_the_report():
    result = invoke("check", "linear.db", "--seed", "5", "--mode", "directional",
                    "--examples", "4", "--format", "json")
    assert result.exit_code == 0, result.output
    data = report_of(result)
    assert data["settings"]["seed"] == 5 and data["settings"]["mode"] == "directional"
    assert data["settings"]["examples"] == 4
    assert [f["cases"] for f in data["formulas"]] == [4, 4]


@pytest.mark.slow
def test_same_seed_same_report_apart_from_timings():
    # (the whole catalogue at the default examples: test_jobs_2_gives_the_same_report_as_jobs_1)
    args = ("check", "linear", "maxpool", "softmax", "--format", "json", "--seed", "3",
            "--examples", "8")
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == second.exit_code == 0, first.output
    assert without_seconds(report_of(first)) == without_seconds(report_of(second))


def test_jobs_load_user_modules_by_path_and_name_in_the_workers():
    args = ("check", "--no-builtin", "-m", GOOD, "-m", "tests.fixtures.raising", "-m", NONSMOOTH,
            "--format", "json", "--examples", "5")
    serial, parallel = invoke(*args), invoke(*args, "--jobs", "2")
    assert serial.exit_code == parallel.exit_code == 1, parallel.output
    assert without_seconds(report_of(parallel)) == without_seconds(report_of(serial))
    assert report_of(parallel)["summary"]["formulas"] == 5


@pytest.mark.parametrize("fmt", ["markdown", "junit", "table"])
def test_formats(fmt):
    result = invoke("check", "softmax", "--examples", "5", "--format", fmt)
    assert result.exit_code == 0, result.output
    text = result.stdout
    if fmt == "markdown":
        assert text.startswith("## gradcheck")
        assert text.count("| `softmax_ce.dy[") == 2
    elif fmt == "junit":
        root = ET.fromstring(text)
        assert [c.get("name") for c in root.iter("testcase")] == [
            "softmax_ce.dy[as-written]", "softmax_ce.dy[reference]"]
    else:
        assert text.startswith("formula ")


def test_output_writes_the_report_to_a_file(tmp_path):
    target = tmp_path / "report.json"
    result = invoke("check", "linear.dx",
                    "--examples", "3", "--format", "json", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and f"report written to {target}" in result.stderr
    assert json.loads(target.read_text())["schema"] == "gradcheck-report/1"


@pytest.fixture
def no_run(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the run started although --output is unusable")

    monkeypatch.setattr(runall, "run_all", refuse)


@pytest.mark.parametrize("where, message", [
    ("missing-dir/report.json", "does not exist"),
    (".", "is a directory"),
    ("a-file/report.json", "is not a directory"),
])
def test_unusable_output_is_refused_before_the_run(tmp_path, no_run, where, message):
    (tmp_path / "a-file").write_text("")
    result = invoke("check", "linear", "-o", str(tmp_path / where))
    assert result.exit_code == 2, result.output
    assert "--output" in result.stderr and message in result.stderr
    assert "Traceback" not in result.output


def test_read_only_output_directory_is_refused(tmp_path, no_run, monkeypatch):
    """The probe file cannot be created (as in a read-only folder; chmod would not stop root,
    who runs CI here): a usage error naming the folder, before the run."""
    import gradcheck.report

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gradcheck.report.tempfile, "NamedTemporaryFile", denied)
    result = invoke("check", "linear", "-o", str(tmp_path / "r.json"))
    assert result.exit_code == 2, result.output
    assert "cannot create a file in" in result.stderr and "Permission denied" in result.stderr


def test_output_that_fails_at_the_end_is_a_clear_error(tmp_path, monkeypatch):
    import gradcheck.report

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gradcheck.report, "write_atomic", disk_full)
    result = invoke("check", "linear.db[reference]",
                    "--examples", "2", "-o", str(tmp_path / "r.json"))
    assert result.exit_code == 2, result.output
    assert "could not write the report" in result.stderr and "No space left" in result.stderr
    assert "Traceback" not in result.output


def test_internal_error_exits_3_with_the_traceback(monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug inside gradcheck")

    monkeypatch.setattr(runall, "run_all", bug)
    result = invoke("check", "linear", "--examples", "2")
    assert result.exit_code == 3
    assert "internal error" in result.stderr and "ZeroDivisionError" in result.stderr


def test_engine_crash_exits_3_after_reporting_every_formula(monkeypatch):
    def engine_bug(*args, **kwargs):
        raise IndexError("a bug inside the engine")

    monkeypatch.setattr(runner, "check_vjp", engine_bug)
    result = invoke("check", "linear.db", "--examples", "2", "--format", "json")
    assert result.exit_code == 3, result.output
    assert "internal error" in result.stderr and "linear.db[reference]" in result.stderr
    messages = [f["message"] for f in report_of(result)["formulas"]]
    assert len(messages) == 2
    assert all("IndexError: a bug inside the engine" in m for m in messages)
    explained = invoke("explain", "linear.db[reference]", "--examples", "2")
    assert explained.exit_code == 3 and "internal error in gradcheck" in explained.stdout


def test_ctrl_c_reports_the_finished_formulas_and_exits_130(monkeypatch):
    real, count = runner.check_vjp, [0]

    def interrupt(*args, **kwargs):
        count[0] += 1
        if count[0] == 5:  # during the second formula
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "check_vjp", interrupt)
    result = invoke("check", "linear.d*[reference]", "--examples", "3", "--format", "json")
    assert result.exit_code == 130
    data = report_of(result)
    assert data["interrupted"] is True and data["ok"] is False
    assert [f["id"] for f in data["formulas"]] == ["linear.dW[reference]"]
    assert "interrupted" in result.stderr


def test_ctrl_c_outside_the_run_exits_130(monkeypatch):
    import gradcheck.declare

    def interrupt(specs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gradcheck.declare, "collect_formulas", interrupt)
    result = invoke("list")
    assert result.exit_code == 130 and "interrupted" in result.stderr


def test_output_dash_is_stdout():
    result = invoke("check", "linear.db[reference]",
                    "--examples", "2", "--format", "json", "-o", "-")
    assert result.exit_code == 0 and report_of(result)["summary"]["formulas"] == 1


def test_progress_appears_on_a_terminal_and_leaves_stdout_clean(monkeypatch):
    monkeypatch.setattr(cli, "stderr_is_tty", lambda: True)
    result = invoke("check", "linear.d*[reference]", "--examples", "2", "--format", "json")
    assert result.exit_code == 0
    assert "[" in result.stderr and "] 1/3 linear.db[reference]" in result.stderr
    assert report_of(result)["summary"]["formulas"] == 3


def test_colour_on_a_terminal_unless_no_color(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    assert cli.use_color(Tty()) and not cli.use_color(sys.stdout)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not cli.use_color(Tty())
    monkeypatch.setattr(cli, "use_color", lambda stream: True)
    coloured = invoke("check", "linear.db[reference]", "--examples", "2", color=True)
    assert "\x1b[32mpass" in coloured.stdout


# ---------------------------------------------------------------- explain


def test_explain_softmax_as_written_shows_the_counterexample_and_grid():
    result = invoke("explain", "softmax_ce.dy[as-written]", "--examples", "20")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "dL/dy_i = p_gt - 1 if i = gt" in out and "Problem 1" in out
    assert "Verdict: fail" in out and "as expected" in out
    assert "Minimal counterexample" in out and "Diagnosis:" in out
    grid = out.split("Relative error of the gradient in 'y'")[1].splitlines()[1].split()
    assert "." in grid and any(cell[0].isdigit() for cell in grid)


def test_explain_maxpool_as_written_shows_a_grid_per_channel():
    result = invoke("explain", "maxpool2d.dx[as-written]", "--examples", "20")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "x[0, :, :]" in out and "Case: x (" in out and "s=1" in out
    grid = out.split("x[0, :, :]")[1].strip().split("\n\n")[0].split("x[1, :, :]")[0]
    assert any(cell not in (".", "k") for row in grid.splitlines() for cell in row.split())


def test_explain_a_passing_formula():
    result = invoke("explain", "linear.db[reference]", "--examples", "5")
    assert result.exit_code == 0 and "Verdict: pass over 5 cases (as expected)" in result.stdout
    assert "Minimal counterexample" not in result.stdout


def test_explain_an_ambiguous_name_lists_the_candidates():
    result = invoke("explain", "linear.dW")
    assert result.exit_code == 2
    assert "linear.dW[as-written], linear.dW[reference]" in result.stderr


@pytest.mark.parametrize("module, formula, code, expected", [
    (BROKEN, "fx_cube.dx[reference]", 1, "NOT as expected"),
    (RAISING, "fx_sin.dx[as-written]", 1, "ValueError: boom from the raising fixture"),
    (NONSMOOTH, "fx_relu.dx[reference]", 0, "Case at a kink"),
])
def test_explain_user_formulas(module, formula, code, expected):
    result = invoke("explain", formula, "--no-builtin", "-m", module, "--examples", "10")
    assert result.exit_code == code, result.output
    assert expected in result.stdout


# ---------------------------------------------------------------- whole catalogue


@pytest.mark.slow
def test_default_catalogue_run_is_as_expected_and_the_same_with_jobs_2():
    """The default run over the built-in catalogue (seed 0), then again in 2 processes, and
    the README's "A real run" table is that run (every column but the error's digits,
    which depend on the BLAS, and the time).

    One test, so that pytest-xdist cannot split it and run the whole catalogue twice over.
    """
    serial = invoke("check", "--format", "json", "--seed", "0")
    assert serial.exit_code == 0, serial.output
    data = report_of(serial)
    assert data["ok"] is True and data["summary"]["formulas"] == CATALOGUE
    assert data["summary"]["unexpected"] == 0 and data["settings"]["examples"] == 100
    for f in data["formulas"]:
        assert f["matches_expectation"], f["id"]
        assert 1 <= f["cases"] <= 100
        if f["status"] == "pass":
            assert f["cases"] == 100 and f["counterexample"] is None
        assert sum(f["coverage"].values()) == f["cases"]
    # the same report from 2 worker processes (8 s here: cheaper than a second, shorter
    # serial run to compare with, whose shrinking of the 5 failing formulas takes 10 s)
    parallel = invoke("check", "--format", "json", "--seed", "0", "--jobs", "2")
    assert parallel.exit_code == 0, parallel.output
    assert without_seconds(report_of(parallel)) == without_seconds(data)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme[readme.index("```\nformula ") + 4 :].split("```")[0].splitlines()
    shown = {r[0]: r for r in map(str.split, table[2:]) if r and "[" in r[0]}
    assert sorted(shown) == [f["id"] for f in data["formulas"]]
    for f in data["formulas"]:
        row = shown[f["id"]]
        assert row[1] == str(f["cases"]) and row[3] == f["status"] and row[4] == "ok", row
        shown_err, err = float(row[2]), f["max_rel_error"]
        if f["status"] == "fail":
            assert row[2] == f"{err:.2e}", row
        else:  # digits of a rounding-level error move with the BLAS: the decade must not
            assert math.floor(math.log10(shown_err)) == math.floor(math.log10(err)), row
        c = f["counterexample"]
        case = "" if c is None else " ".join(
            [f"{k}{'×'.join(map(str, v))}" for k, v in c["shapes"].items()]
            + [f"{k}={v}" for k, v in c["params"].items()])
        assert " ".join(row[5:]) == case, row


def test_runs_as_a_script(tmp_path):
    """The checkout's cli.py finds the checkout's catalogue from any directory."""
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "list", "linear.dx"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "linear.dx[as-written]"


def test_runs_as_an_installed_module(tmp_path):
    """`python -m gradcheck` takes the catalogue from ./derivations, if there is one."""
    done = subprocess.run([sys.executable, "-m", "gradcheck", "list", "linear.dx"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "linear.dx[as-written]"
    elsewhere = subprocess.run([sys.executable, "-m", "gradcheck", "list"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
    assert elsewhere.returncode == 2 and "Usage: gradcheck list" in elsewhere.stderr


@pytest.mark.parametrize("command", ["list", "check", "explain"])
def test_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.stdout


# ---------------------------------------------------------------- report only (issue 15)


def test_report_only_exits_0_with_the_same_report():
    usual = invoke("check", "--no-builtin", "-m", BROKEN, "-n", "10", "--format", "json")
    audit = invoke("check", "--no-builtin", "-m", BROKEN, "-n", "10", "--format", "json",
                   "--report-only")
    assert usual.exit_code == 1 and audit.exit_code == 0, audit.output
    assert without_seconds(report_of(audit)) == without_seconds(report_of(usual))
    assert report_of(audit)["summary"]["unexpected"] >= 1
    assert "--report-only" in invoke("check", "--help").stdout
    # a usage error is still one
    assert invoke("check", "no-such-formula", "--report-only").exit_code == 2
