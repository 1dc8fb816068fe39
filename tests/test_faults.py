"""The fault suite: every way a formula module can misbehave gives a clear message naming the
formula, and nothing is lost: the other formulas are still checked and reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import hypothesis.extra.numpy  # noqa: F401  (pytester runs in-process: preload numpy)
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gradcheck as gc
from gradcheck import cli

ROOT = Path(__file__).resolve().parent.parent
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_mid_run_keeps_finished_formulas_in_an_interrupted_report(tmp_path, sig):
    target, mark = tmp_path / "report.json", tmp_path / "slow-started"
    proc = subprocess.Popen(
        [sys.executable, "cli.py", "check", "--no-builtin", "-m", "tests/fixtures/slow.py",
         "--examples", "100000", "--format", "json", "-o", str(target)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "GRADCHECK_TEST_MARK": str(mark)},
    )
    deadline = time.monotonic() + 120
    while not mark.exists() and time.monotonic() < deadline:  # the quick formula is done
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    report = json.loads(target.read_text())
    assert report["interrupted"] is True and report["ok"] is False
    assert [f["id"] for f in report["formulas"]] == ["a_quick.dx[reference]"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no half-written file


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
