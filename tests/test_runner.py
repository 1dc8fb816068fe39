"""The runner: cases counted once, coverage, nonsmooth and erroring formulas, Ctrl-C, jobs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

import gradcheck.runner as runner
from gradcheck.declare import Derivation, collect_formulas
from gradcheck.runall import run_all
from gradcheck.runner import Settings, run_formula

FIXTURES = Path(__file__).parent / "fixtures"
MODULES = [str(FIXTURES / f"{name}.py") for name in ("good", "raising", "nonsmooth")]
FORMULAS = {f.id: f for f in collect_formulas(MODULES)}


def _plain(result):
    out = result.to_dict()
    out.pop("seconds")
    return out


@pytest.fixture
def calls(monkeypatch):
    """The status of every case the engine checks, in order (shrinking replays included)."""
    seen: list[str] = []
    real = runner.check_vjp

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.append(result.status)
        return result

    monkeypatch.setattr(runner, "check_vjp", recording)
    return seen


def test_failing_formula_counts_cases_up_to_the_first_failure_only(calls):
    r = run_formula(FORMULAS["fx_square.dx[as-written]"], Settings(examples=50, seed=1))
    assert r.status == "fail" and r.matches_expectation
    first_failure = calls.index("fail") + 1
    assert r.cases == first_failure <= 50
    assert len(calls) > r.cases, "shrinking replayed cases; they must not be counted"
    assert sum(r.coverage.values()) == r.cases
    c = r.counterexample
    assert c is not None and c["status"] == "fail" and c["diagnosis"]
    assert set(c) >= {"shapes", "params", "max_rel_error", "worst_index", "diagnosis"}
    assert c["shapes"] == {"x": [1, 1]} and c["params"] == {"k": 1}  # shrunk to the minimum
    assert r.failing_result is not None and r.failing_result.status == "fail"


def test_passing_formula_checks_every_example_and_coverage_sums_to_cases(calls):
    r = run_formula(FORMULAS["fx_square.dx[reference]"], Settings(examples=20, seed=2))
    assert r.status == "pass" and r.counterexample is None and r.message == ""
    assert r.cases == len(calls) == 20
    assert sum(r.coverage.values()) == r.cases and set(r.coverage) <= {"single", "several"}
    assert r.max_rel_error is not None and r.median_rel_error is not None
    assert 0 <= r.median_rel_error <= r.max_rel_error < 1e-8  # ~5.9e-10 seen


def test_nonsmooth_formula_reports_the_kink():
    r = run_formula(FORMULAS["fx_relu.dx[reference]"], Settings(examples=10))
    assert r.status == "nonsmooth" and r.matches_expectation
    assert r.counterexample is not None and r.counterexample["status"] == "nonsmooth"
    assert "kink" in r.counterexample["diagnosis"]
    assert r.coverage == {"n=3": r.cases}


def test_formula_that_raises_is_an_error_with_its_message():
    r = run_formula(FORMULAS["fx_sin.dx[as-written]"], Settings(examples=10))
    assert r.status == "error" and not r.matches_expectation
    assert "boom from the raising fixture" in r.message and "raising.py" in r.message
    assert r.cases >= 1 and r.counterexample is not None
    assert r.counterexample["status"] == "error"


def test_a_crash_outside_the_formula_is_an_error_and_the_run_goes_on():
    bad = Derivation("fx_badstrategy", lambda x: x, cases="not a strategy")
    bad.formula("x", lambda dy, x: dy)
    run = run_all([bad.formulas[0], FORMULAS["fx_sin.dx[reference]"]], Settings(examples=5))
    first, second = run.results
    assert first.id == "fx_badstrategy.dx[reference]" and first.status == "error"
    assert "fx_badstrategy.dx[reference]" in first.message
    assert second.status == "pass" and second.cases == 5
    assert not run.ok and not run.interrupted


def test_a_formula_that_calls_sys_exit_is_an_error():
    d = Derivation("fx_exits", lambda x: 2 * x, cases=st.just({"x": np.ones(2)}))
    d.formula("x", lambda dy, x: sys.exit(0))
    run = run_all(d.formulas, Settings(examples=3))
    assert run.results[0].status == "error" and "sys.exit(0)" in run.results[0].message


def test_a_classifier_that_raises_is_named_in_the_error():
    def classify(case):
        raise KeyError("shape")

    d = Derivation("fx_badclassify", lambda x: 2 * x,
                   cases=st.just({"x": np.ones(2)}), classify=classify)
    d.formula("x", lambda dy, x: 2 * dy)
    r = run_formula(d.formulas[0], Settings(examples=5))
    assert r.status == "error" and "classify() of derivation 'fx_badclassify'" in r.message


def test_same_seed_same_result():
    f = FORMULAS["fx_square.dx[as-written]"]
    assert _plain(run_formula(f, Settings(examples=20, seed=4))) == _plain(
        run_formula(f, Settings(examples=20, seed=4)))


def test_directional_mode_runs_and_passes():
    r = run_formula(FORMULAS["fx_square.dx[reference]"], Settings(examples=5, mode="directional"))
    assert r.status == "pass" and r.cases == 5


@pytest.mark.parametrize("kwargs", [{"examples": 0}, {"examples": True}, {"examples": 2.5},
                                    {"mode": "sideways"}, {"dtype": "float16"}, {"seed": "3"}])
def test_settings_reject_bad_values(kwargs):
    with pytest.raises(ValueError, match=f"^{next(iter(kwargs))} must be"):
        Settings(**kwargs)


def test_keyboard_interrupt_keeps_finished_results(monkeypatch):
    real, count = runner.check_vjp, [0]

    def interrupt_on_the_third_formula(*args, **kwargs):
        count[0] += 1
        if count[0] == 7:  # two formulas of 3 cases each are done
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "check_vjp", interrupt_on_the_third_formula)
    ids = ["fx_sin.dx[reference]", "fx_square.dx[reference]", "fx_relu.dx[reference]"]
    run = run_all([FORMULAS[i] for i in ids], Settings(examples=3))
    assert run.interrupted and not run.ok
    assert [r.id for r in run.results] == ["fx_relu.dx[reference]", "fx_sin.dx[reference]"]
    assert all(r.cases == 3 for r in run.results)


def test_results_are_sorted_by_id_whatever_the_input_order():
    ids = ["fx_square.dx[reference]", "fx_sin.dx[reference]", "fx_relu.dx[reference]"]
    run = run_all([FORMULAS[i] for i in ids], Settings(examples=3))
    assert [r.id for r in run.results] == sorted(ids)


@pytest.mark.slow
def test_jobs_give_the_same_results_as_a_serial_run():
    formulas = list(FORMULAS.values())
    serial = run_all(formulas, Settings(examples=8, seed=5))
    progress: list[tuple[str, int, int]] = []
    parallel = run_all(formulas, Settings(examples=8, seed=5), lambda *a: progress.append(a),
                       jobs=2)
    assert [_plain(r) for r in parallel.results] == [_plain(r) for r in serial.results]
    shipped = {r.id: r for r in parallel.results}["fx_square.dx[as-written]"]
    assert shipped.failing_result is not None and shipped.failing_result.rel_error is not None
    assert progress[-1][1:] == (len(formulas), len(formulas))


@pytest.mark.slow
def test_the_cases_drawn_depend_on_the_seed_alone_not_on_what_is_imported():
    """Hypothesis would mix literals of every loaded local module into its draws."""
    import subprocess
    import sys

    code = ("{extra}\nfrom gradcheck.declare import collect_formulas\n"
            "from gradcheck.runner import Settings, run_formula\n"
            "f = {{f.id: f for f in collect_formulas(['derivations.maxpool2d'])}}"
            "['maxpool2d.dx[as-written]']\n"
            "r = run_formula(f, Settings(examples=100, seed=0))\n"
            "print(r.cases, r.counterexample['shapes'])")
    outs = {
        subprocess.run([sys.executable, "-c", code.format(extra=extra)], capture_output=True,
                       text=True, check=True, cwd=FIXTURES.parent.parent).stdout
        for extra in ("", "import gradcheck.html, tests.test_engine")
    }
    assert len(outs) == 1, outs


def test_a_changed_hypothesis_hook_warns_once_and_the_run_still_works(monkeypatch):
    """The private hook lives in gradcheck.hypothesis_compat; losing it must not be silent."""
    from hypothesis.internal.conjecture import providers

    from gradcheck import hypothesis_compat

    monkeypatch.delattr(providers, "_get_local_constants")
    monkeypatch.setattr(hypothesis_compat, "_warned", False)
    with pytest.warns(hypothesis_compat.ReproducibilityWarning, match="module constants"):
        first = run_formula(FORMULAS["fx_sin.dx[reference]"], Settings(examples=3))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = run_formula(FORMULAS["fx_sin.dx[reference]"], Settings(examples=3))
    assert first.status == second.status == "pass"


def test_without_fork_formulas_run_in_this_process_with_the_same_results(monkeypatch):
    import gradcheck.isolate

    formulas = list(FORMULAS.values())
    forked = run_all(formulas, Settings(examples=5, seed=3))
    monkeypatch.setattr(gradcheck.isolate, "CAN_FORK", False)
    here = run_all(formulas, Settings(examples=5, seed=3), jobs=2)
    assert [_plain(r) for r in here.results] == [_plain(r) for r in forked.results]
