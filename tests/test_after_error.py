"""After a formula raises on a case, the search goes on among the cases on which it does
not raise, and a wrong value found there is reported with the crash."""

from __future__ import annotations

import json
import re

import numpy as np
from hypothesis import strategies as st

from gradcheck import Derivation
from gradcheck.runner import Settings, run_formula
from gradcheck.strategies import float_arrays

SETTINGS = Settings(examples=30, seed=0)


def derivation(vjp):
    d = Derivation("double", lambda x: 2 * x, cases=st.fixed_dictionaries({
        "x": float_arrays(st.tuples(st.integers(1, 3), st.integers(1, 3)), max_magnitude=10.0)
    }), classify=lambda case: "single" if case["x"].size == 1 else "several")
    d.formula("x", vjp)
    return d.formulas[0]


def no_single(dy, x, wrong):
    if x.size == 1:
        raise ValueError("a 1x1 input is not supported")
    return (3.0 if wrong else 2.0) * dy


def test_raises_on_1x1_and_wrong_on_larger_inputs_reports_both():
    r = run_formula(derivation(lambda dy, x: no_single(dy, x, wrong=True)), SETTINGS)
    assert r.status == "fail", r.message
    assert r.message.startswith("raises on x (1, 1); wrong on x ("), r.message
    assert "ValueError: a 1x1 input is not supported" in r.message
    c = r.counterexample
    assert c["status"] == "fail" and c["diagnosis"] and sorted(c["shapes"]["x"]) == [1, 2]
    assert c["raises_on"]["shapes"] == {"x": [1, 1]} and c["raises_on"]["status"] == "error"
    assert r.failing_result is not None and r.failing_result.status == "fail"
    assert sum(r.coverage.values()) == r.cases and r.coverage.get("several", 0) >= 1
    assert json.loads(json.dumps(r.to_dict()))["counterexample"]["raises_on"]["status"] == "error"


def test_raises_on_1x1_and_right_elsewhere_stays_an_error_saying_so():
    r = run_formula(derivation(lambda dy, x: no_single(dy, x, wrong=False)), SETTINGS)
    assert r.status == "error" and "a 1x1 input is not supported" in r.message
    assert re.search(r"right values on \d+ cases that do not raise; \d+ more raised", r.message)
    assert r.cases > SETTINGS.examples // 2
    assert r.counterexample is not None and "raises_on" not in r.counterexample


def test_raising_on_every_case_stays_an_error():
    def always(dy, x):
        raise RuntimeError("not implemented")

    r = run_formula(derivation(always), SETTINGS)
    assert r.status == "error", r.message
    assert f"all {SETTINGS.examples} more cases raised" in r.message, r.message


def test_a_layer_backward_raising_on_one_geometry_and_wrong_on_another():
    class Scale:
        def forward(self, x):
            self.x = x
            return 3 * x

        def backward(self, dy):
            if dy.shape[0] == 1:
                raise IndexError("batch of one")
            return 3 * dy + (dy.shape[1] > 1)  # wrong with two or more columns

    from gradcheck import Layer

    d = Layer("scale", Scale, cases=st.fixed_dictionaries({"x": float_arrays(
        st.tuples(st.integers(1, 3), st.integers(1, 3)), max_magnitude=10.0)}), inputs="x")
    d.formula("x", lambda layer, dy: layer.backward(dy))
    r = run_formula(d.formulas[0], SETTINGS)
    assert r.status == "fail" and "IndexError: batch of one" in r.message
    assert r.counterexample["shapes"]["x"] == [2, 2]
    assert r.counterexample["raises_on"]["shapes"]["x"][0] == 1
    assert np.isfinite(r.max_rel_error)
