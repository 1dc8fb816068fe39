"""The fault suite: every way a formula module can misbehave gives a clear message naming the
formula, and nothing is lost: the other formulas are still checked and reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import hypothesis.extra.numpy  # noqa: F401  (pytester runs in-process: preload numpy)
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gradcheck as gc
from gradcheck import cli
from tests.conftest import ROOT, signal_when_marked

FAULTS = "tests/fixtures/faults.py"

# formula id -> words its error message must contain
FORMULA_FAULTS = {
    "forward_raises": ["forward raised RuntimeError: deliberate failure"],
    "vjp_raises": ["vjp raised RuntimeError: deliberate failure"],
    "vjp_wrong_shape": ["vjp returned shape (3,)", "expected (2,)"],
    "vjp_int_dtype": ["vjp returned", "int64", "floating dtype"],
    "vjp_none": ["vjp returned NoneType"],
    "vjp_list": ["vjp returned list"],
    "vjp_nan": ["vjp returned a non-finite value"],
    "forward_inf": ["forward returned a non-finite value"],
    "forward_none": ["forward returned NoneType"],
    "forward_list": ["forward returned list"],
    "forward_nondeterministic": ["nondeterministic"],
    "forward_dropout": ["nondeterministic"],
    "forward_mutates": ["forward modified its input 'x' in place"],
    "vjp_mutates": ["vjp modified its input 'x' in place"],
    "batched_but_not": ["forward does not broadcast over a leading batch axis (declared "
                        "batched=True)", "returned shape ()", "declare batched=False"],
    "strategy_raises": ["case strategy", "raised ValueError: the strategy itself is broken"],
    "strategy_missing_wrt": ["case strategy", "unusable case", "wrt='x'"],
    "strategy_int_array": ["case strategy", "unusable case", "int64"],
    "strategy_unhealthy": ["case strategy"],
}


@pytest.fixture(scope="module")
def report():
    result = CliRunner().invoke(cli.main, ["check", "--no-builtin", "-m", FAULTS, "--examples", "5",
                                           "--format", "json"])
    assert result.exit_code == 1, result.output  # formulas not as expected: exit 1, no crash
    return {f["derivation"].removeprefix("fault_"): f for f in json.loads(result.stdout)[
        "formulas"]}


def test_no_formula_is_lost(report):
    assert set(report) == set(FORMULA_FAULTS) | {"fine"}
    assert report["fine"]["status"] == "pass" and report["fine"]["cases"] >= 1


@pytest.mark.parametrize("fault", sorted(FORMULA_FAULTS))
def test_fault_is_an_error_with_a_clear_message(report, fault):
    f = report[fault]
    assert f["status"] == "error" and not f["matches_expectation"]
    message = f["message"] or (f["counterexample"] or {}).get("message", "")
    named = f["id"] in message or message.startswith(("forward", "vjp"))  # engine messages
    assert named, message  # name the formula, or the callable of that formula at fault
    for words in FORMULA_FAULTS[fault]:
        assert words in message, message


@pytest.mark.slow
def test_every_fault_is_an_error_item_under_the_plugin(pytester):
    pytester.path.joinpath("faults.py").write_text((ROOT / FAULTS).read_text())
    result = pytester.runpytest("--gradcheck", "--gradcheck-module=faults.py",
                                "--gradcheck-examples=5")
    result.assert_outcomes(passed=1, failed=len(FORMULA_FAULTS))
    out = result.stdout.str()
    for fault, words in FORMULA_FAULTS.items():
        assert f"fault_{fault}.dx[reference]: error" in out, fault
        assert words[-1] in out, (fault, words[-1])


MODULE_FAULTS = {
    "import-error": ("import nonexistent_module_xyz\n", "failed to import"),
    "syntax-error": ("def broken(:\n", "SyntaxError"),
    "no-derivations": ("X = 1\n", "defines no gradcheck.Derivation"),
}


@pytest.mark.parametrize("fault", sorted(MODULE_FAULTS))
def test_bad_module_is_a_usage_error_naming_it(tmp_path, fault):
    source, words = MODULE_FAULTS[fault]
    module = tmp_path / f"{fault.replace('-', '_')}.py"
    module.write_text(source)
    result = CliRunner().invoke(cli.main, ["check", "--no-builtin", "-m", str(module)])
    assert result.exit_code == 2 and words in result.stderr and module.name in result.stderr
    assert "Traceback" not in result.output


def test_duplicate_formula_ids_are_a_usage_error(tmp_path):
    for name in ("one", "two"):
        (tmp_path / f"{name}.py").write_text((ROOT / "tests/fixtures/good.py").read_text())
    result = CliRunner().invoke(cli.main, ["check", "--no-builtin", "-m",
                                           str(tmp_path / "one.py"), "-m",
                                           str(tmp_path / "two.py")])
    assert result.exit_code == 2 and "duplicate formula id" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_mid_run_keeps_finished_formulas_in_an_interrupted_report(tmp_path, sig):
    target = tmp_path / "report.json"
    proc = signal_when_marked(  # the quick formula is done when the slow one starts
        [sys.executable, "cli.py", "check", "--no-builtin", "-m", "tests/fixtures/slow.py",
         "--examples", "100000", "--format", "json", "-o", str(target)],
        tmp_path / "slow-started", sig)
    assert proc.returncode == 130, proc.stderr
    report = json.loads(target.read_text())
    assert report["interrupted"] is True and report["ok"] is False
    assert [f["id"] for f in report["formulas"]] == ["a_quick.dx[reference]"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no half-written file
    assert "Traceback" not in proc.stderr


def test_case_too_large_for_exhaustive_mode_falls_back_to_directional():
    x = np.linspace(-1, 1, 50_000)
    result = gc.check_vjp(lambda x: np.sin(x), lambda dy, x: dy * np.cos(x), {"x": x}, "x",
                          mode="exhaustive", batched=True, budget=2**20)
    assert result.status == "pass" and result.mode == "directional"
    assert any("over the 1 MiB budget" in note for note in result.notes), result.notes


# ------------------------------------------------------------------ fuzzing check_vjp

values = st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=3), st.lists(st.floats(), max_size=3),
    st.builds(np.array, st.lists(st.floats(), max_size=4)),
    st.builds(np.arange, st.integers(0, 4)),
)
callables = st.sampled_from([
    lambda **k: np.ones(2), lambda **k: None, lambda **k: 1 / 0, lambda *a, **k: [1.0],
    lambda *a, **k: np.array([np.nan]), lambda **k: k.get("x"), lambda *a, **k: np.ones(()),
])


@settings(max_examples=300, deadline=None)
@given(case=st.dictionaries(st.sampled_from(["x", "y", "s"]), values, max_size=3),
       wrt=st.sampled_from(["x", "y", "z", 3]), forward=callables, vjp=callables,
       mode=st.sampled_from(["auto", "exhaustive", "directional", "bogus"]))
def test_check_vjp_raises_only_documented_errors(case, wrt, forward, vjp, mode):
    try:
        result = gc.check_vjp(forward, vjp, case, wrt, mode=mode)
    except gc.InvalidCase as exc:
        assert str(exc)
    else:
        assert result.status in ("pass", "fail", "nonsmooth", "error")
        assert result.status != "error" or result.message


FORWARDS = [lambda x: np.sin(x), lambda x: np.sin(x).sum(), lambda x: None, lambda x: 1 / 0,
            lambda x: np.sin(x)[:-1], lambda x: np.full_like(x, np.nan)]
RIGHT, FLIPPED = (lambda dy, x: dy * np.cos(x)), (lambda dy, x: -dy * np.cos(x))
VJPS = [RIGHT, FLIPPED, lambda dy, x: None, lambda dy, x: 1 / 0, lambda dy, x: x[:1],
        lambda dy, x: dy * np.nan]


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(x=arrays(np.float64, st.integers(1, 4), elements=st.floats(-10, 10)),
       forward=st.sampled_from(FORWARDS), vjp=st.sampled_from(VJPS),
       mode=st.sampled_from(["auto", "exhaustive", "directional"]))
def test_check_vjp_on_valid_cases_gives_a_verdict_or_a_named_error(x, forward, vjp, mode):
    """Valid cases with working and broken callables: a verdict or an error with a message,
    never an exception; the working pair passes and its sign flip fails."""
    result = gc.check_vjp(forward, vjp, {"x": x}, "x", mode=mode, batched=forward is FORWARDS[0])
    assert result.status in ("pass", "fail", "nonsmooth", "error")
    assert result.status != "error" or result.message
    if forward in FORWARDS[:2] and vjp is RIGHT:
        assert result.status == "pass", result.explain()
    if forward in FORWARDS[:2] and vjp is FLIPPED and np.abs(np.cos(x)).max() > 1e-3:
        assert result.status == "fail", result.explain()


# ------------------------------------------------- formulas that end, kill or hang a process

def check(*args: str, env: dict[str, str] | None = None):
    return CliRunner(env=env).invoke(cli.main, ["check", *args])



PROCESS_FAULTS = {  # formula id -> words its error message must contain
    "proc_exit_zero": "the process checking it ended with exit status 0",
    "proc_exit_three": "the process checking it ended with exit status 3",
    "proc_segfault": "the process checking it was killed by SIGSEGV",
    "proc_system_exit": "called sys.exit(0)",
    "proc_cancelled": "raised CancelledError: cancelled by the formula",
}
CONTROLS = {"proc_fine", "proc_chatty"}  # must pass; chatty prints to stdout from its forward


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_formula_that_ends_its_process_is_an_error_and_the_run_goes_on(jobs):
    """os._exit(0), a segfault, SystemExit and CancelledError from a formula: each is its
    formula's error, named; the controls pass; the JSON on stdout is intact; exit 1."""
    proc = subprocess.run(
        [sys.executable, "cli.py", "check", "--no-builtin", "-m",
         "tests/fixtures/process_faults.py", "--examples", "5", "--format", "json", "--jobs",
         jobs],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    found = {f["derivation"]: f for f in json.loads(proc.stdout)["formulas"]}
    assert set(found) == set(PROCESS_FAULTS) | CONTROLS
    for name in CONTROLS:
        assert found[name]["status"] == "pass", found[name]
    for name, words in PROCESS_FAULTS.items():
        f = found[name]
        assert f["status"] == "error" and f["id"] in f["message"] and words in f["message"], f
    assert "chatter from the forward" in proc.stderr  # the forward's print went to stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_formula_that_ends_its_process_is_an_error_item_under_the_plugin(pytester):
    pytester.path.joinpath("pf.py").write_text((ROOT / "tests/fixtures/process_faults.py")
                                               .read_text())
    result = pytester.runpytest_subprocess("--gradcheck", "--gradcheck-module=pf.py",
                                           "--gradcheck-examples=5")
    result.assert_outcomes(passed=len(CONTROLS), failed=len(PROCESS_FAULTS))
    out = result.stdout.str()
    for name, words in PROCESS_FAULTS.items():
        assert f"{name}.dx[reference]: error" in out and words in out, name


@pytest.mark.slow
def test_a_formula_that_hangs_is_stopped_at_the_time_limit_and_the_run_goes_on():
    from gradcheck.runall import run_all
    from gradcheck.runner import Settings

    formulas = gc.collect_formulas(["tests/fixtures/hang.py"])
    start = time.monotonic()
    run = run_all(formulas, Settings(examples=3), timeout=2)
    assert time.monotonic() - start < 60
    found = {r.id: r for r in run.results}
    assert found["hang_fine.dx[reference]"].status == "pass"
    hung = found["hang.dx[reference]"]
    assert hung.status == "error" and "hang.dx[reference]: did not finish in 2 s" in hung.message
    assert not run.ok and not run.interrupted


def test_unpicklable_case_values_give_the_same_verdicts_whatever_the_jobs():
    reports = []
    for jobs in ("1", "2"):
        result = check("--no-builtin", "-m", "tests/fixtures/unpicklable.py", "--examples", "10",
                       "--seed", "1", "--format", "json", "--jobs", jobs)
        assert result.exit_code == 0, result.output  # the wrong formula fails, as expected
        reports.append(json.loads(result.stdout)["formulas"])
    for formulas in reports:
        assert [(f["id"], f["status"]) for f in formulas] == [
            ("unpicklable.dx[as-written]", "fail"), ("unpicklable.dx[reference]", "pass")]
        assert "lambda" in str(formulas[0]["counterexample"]["params"])  # its repr travelled
    one, two = ([{k: v for k, v in (f["counterexample"] or {}).items() if k != "params"}
                 for f in formulas] for formulas in reports)  # params: reprs with addresses
    assert one == two


@pytest.mark.slow
def test_a_module_that_sets_numpy_errors_to_raise_changes_no_other_verdict():
    with np.errstate():  # the module's np.seterr must not outlive this test
        result = CliRunner().invoke(cli.main, ["check", "conv2d", "seterr", "--builtin",
                                               "--examples", "10", "--format", "json", "-m",
                                               "tests/fixtures/seterr_raise.py"])
    assert result.exit_code == 0, result.output
    formulas = json.loads(result.stdout)["formulas"]
    assert {f["status"] for f in formulas if f["expect"] == "pass"} == {"pass"}
    assert len(formulas) == 7


# ---------------------------------------------------- usage, signals, output paths, rendering

@pytest.mark.slow
def test_the_time_limit_option_stops_a_hanging_formula_and_the_run_goes_on():
    proc = subprocess.run(
        [sys.executable, "cli.py", "check", "--no-builtin", "-m", "tests/fixtures/hang.py",
         "--examples", "3", "--timeout", "2", "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    found = {f["id"]: f for f in json.loads(proc.stdout)["formulas"]}
    assert found["hang_fine.dx[reference]"]["status"] == "pass"
    assert "did not finish in 2 s" in found["hang.dx[reference]"]["message"]


@pytest.mark.parametrize("command", ["check", "explain", "sweep"])
def test_a_negative_seed_is_a_usage_error_naming_it(command):
    args = [command, "--seed", "-1"] + ([] if command == "check" else ["linear.db[reference]"])
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 2 and "--seed" in result.stderr and "-1" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_bad_time_limit_is_a_usage_error_naming_it(value):
    result = check("--timeout", value)
    assert result.exit_code == 2 and "--timeout" in result.stderr, result.output


def test_jobs_above_the_cpu_count_are_capped_with_a_warning(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    result = check("--no-builtin", "-m", "tests/fixtures/good.py", "--examples", "3",
                   "--jobs", "64")
    assert result.exit_code == 0, result.output
    assert "--jobs 64 is more than the 1 CPUs available" in result.stderr


@pytest.mark.slow
def test_sigterm_while_modules_load_exits_130_saying_so(tmp_path):
    proc = signal_when_marked(
        [sys.executable, "cli.py", "check", "--no-builtin", "-m",
         "tests/fixtures/slow_import.py"], tmp_path / "importing", signal.SIGTERM)
    assert proc.returncode == 130 and "interrupted" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_ctrl_c_with_two_jobs_prints_no_worker_traceback(tmp_path):
    target = tmp_path / "r.json"
    proc = signal_when_marked(
        [sys.executable, "cli.py", "check", "--no-builtin", "-m", "tests/fixtures/slow.py",
         "--examples", "100000", "--jobs", "2", "--format", "json", "-o", str(target)],
        tmp_path / "slow-started", signal.SIGINT)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(target.read_text())["interrupted"] is True


def test_a_relative_output_is_where_it_was_when_the_command_started(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    result = check("--no-builtin", "-m", str(ROOT / "tests/fixtures/wanders.py"), "--examples",
                   "3", "--format", "json", "-o", "r.json",
                   env={"GRADCHECK_TEST_CHDIR": str(tmp_path / "elsewhere")})
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True
    assert not (tmp_path / "elsewhere" / "r.json").exists()


def test_a_module_that_prints_as_it_loads_leaves_json_on_stdout_intact(monkeypatch):
    monkeypatch.chdir(ROOT)  # the module changes directory: back afterwards
    result = check("--no-builtin", "-m", "tests/fixtures/wanders.py", "--examples", "3",
                   "--format", "json", env={"GRADCHECK_TEST_CHDIR": str(ROOT)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    assert "chatter at import" in result.stderr


def test_the_same_module_under_two_spellings_is_loaded_once():
    result = check("--no-builtin", "-m", "tests/fixtures/good.py", "-m",
                   "./tests/fixtures/good.py", "-m", str(ROOT / "tests/fixtures/good.py"),
                   "--examples", "3", "--format", "json")
    assert result.exit_code == 0 and "duplicate" not in result.output, result.output
    assert len(json.loads(result.stdout)["formulas"]) == len(
        gc.collect_formulas(["tests/fixtures/good.py"]))


def test_a_case_value_whose_repr_raises_leaves_the_verdicts_standing():
    result = check("--no-builtin", "-m", "tests/fixtures/bad_repr.py", "--examples", "5",
                   "--format", "json")
    assert result.exit_code == 0, result.output
    found = {f["id"]: f for f in json.loads(result.stdout)["formulas"]}
    assert found["bad_repr.dx[reference]"]["status"] == "pass"
    wrong = found["bad_repr.dx[as-written]"]
    assert wrong["status"] == "fail" and "repr raised RuntimeError" in str(
        wrong["counterexample"]["params"])


@pytest.mark.parametrize("fmt", ["json", "html", "markdown"])
def test_an_interrupt_while_rendering_still_writes_a_valid_report(tmp_path, monkeypatch, fmt):
    """Ctrl-C (or SIGTERM) during rendering: the finished formulas are written all the same
    (HTML without its plots), marked interrupted; exit 130."""
    from gradcheck import report

    real = {"json": report.render_json, "markdown": report.render_markdown}
    calls = []

    def interrupted_once(run, *args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return (real[fmt] if fmt in real else report.RENDERERS["html"])(run, *args, **kwargs)

    name = {"json": "render_json", "html": "render_html", "markdown": "render_markdown"}[fmt]
    if fmt == "html":
        real_html = report.render_html

        def interrupted_once(run, plots=True):  # noqa: F811
            calls.append(plots)
            if plots:
                raise KeyboardInterrupt
            return real_html(run, plots=False)

    monkeypatch.setattr(report, name, interrupted_once)
    monkeypatch.setitem(report.RENDERERS, fmt, interrupted_once)
    target = tmp_path / f"r.{fmt}"
    result = check("--no-builtin", "-m", "tests/fixtures/good.py", "--examples", "3",
                   "--format", fmt, "-o", str(target))
    assert result.exit_code == 130, result.output
    text = target.read_text()
    if fmt == "json":
        assert json.loads(text)["interrupted"] is True
    elif fmt == "html":
        assert "(interrupted)" in text and "<svg" not in text and calls == [True, False]
    else:
        assert "INTERRUPTED" in text and "fx_square.dx[reference]" in text


def test_an_unknown_dotted_module_is_a_pytest_usage_error(pytester):
    result = pytester.runpytest("--gradcheck", "--gradcheck-module=no.such.mod")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "no.such.mod" in result.stderr.str() and "INTERNALERROR" not in result.stdout.str()


@pytest.mark.parametrize("fmt", ["table", "json", "markdown", "junit", "html"])
def test_hostile_strings_from_a_formula_leave_every_report_valid(tmp_path, fmt):
    import xml.etree.ElementTree as ET

    target = tmp_path / "report"
    result = check("--no-builtin", "-m", "tests/fixtures/hostile.py", "--examples", "3",
                   "--format", fmt, "-o", str(target))
    assert result.exit_code == 1, result.output  # the raising formula is an error
    text = target.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x00" not in text
    if fmt in ("html", "junit"):  # markup escaped (in the others it is text, or fenced)
        assert "<script>" not in text
    if fmt == "json":
        assert len(json.loads(text)["formulas"]) == 2
    elif fmt == "junit":
        assert len(ET.fromstring(text).findall(".//testcase")) == 2
    assert "hostile_fine.dx[reference]" in text


def test_hostile_strings_leave_the_plugins_html_report_valid(pytester):
    pytester.path.joinpath("hostile.py").write_text(
        (ROOT / "tests/fixtures/hostile.py").read_text())
    target = pytester.path / "r.html"
    result = pytester.runpytest("--gradcheck", "--gradcheck-module=hostile.py",
                                "--gradcheck-examples=3", f"--gradcheck-html={target}")
    result.assert_outcomes(passed=1, failed=1)
    assert "INTERNALERROR" not in result.stdout.str()
    page = target.read_text(encoding="utf-8")
    assert "\\udc80" in page and "<script>" not in page


@pytest.mark.slow
def test_the_plugins_time_limit_stops_a_hanging_formula(pytester):
    pytester.path.joinpath("hang.py").write_text((ROOT / "tests/fixtures/hang.py").read_text())
    result = pytester.runpytest("--gradcheck", "--gradcheck-module=hang.py",
                                "--gradcheck-examples=3", "--gradcheck-timeout=2")
    result.assert_outcomes(passed=1, failed=1)
    assert "hang.dx[reference]: did not finish in 2 s" in result.stdout.str()


def test_a_bad_plugin_time_limit_is_a_usage_error(pytester):
    pytester.path.joinpath("hang.py").write_text((ROOT / "tests/fixtures/hang.py").read_text())
    result = pytester.runpytest("--gradcheck", "--gradcheck-module=hang.py",
                                "--gradcheck-timeout=-3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "timeout must be a number of seconds >= 0" in result.stderr.str()
