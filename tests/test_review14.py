"""Regression tests for the review of issue 14 (each failed before its fix)."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import check_vjp

# ----------------------------------------------- 1. positional-only callables bind by name

CASE = {"x": np.array([0.3, -1.2]), "w": np.array([2.0, 0.5])}


def _fwd(x, w):
    return x * w**2


def test_positional_only_parameters_are_bound_by_name():
    def right(dy, /, w, x):
        return dy * w**2

    def wrong(dy, /, w, x):
        return dy * x**2

    def right_kwonly(dy, /, *, w, x):
        return dy * w**2

    def right_all_posonly(dy, w, x, /):
        return dy * w**2

    assert check_vjp(_fwd, right, CASE, "x").status == "pass"
    assert check_vjp(_fwd, wrong, CASE, "x").status == "fail"
    assert check_vjp(_fwd, right_kwonly, CASE, "x").status == "pass"
    assert check_vjp(_fwd, right_all_posonly, CASE, "x").status == "pass"
    # the case's key order does not matter
    flipped = {"w": CASE["w"], "x": CASE["x"]}
    assert check_vjp(_fwd, right_all_posonly, flipped, "x").status == "pass"
    assert check_vjp(_fwd, wrong, flipped, "x").status == "fail"


def test_a_ufunc_gets_one_value_by_position_and_several_are_refused_clearly():
    z = {"z": np.array([0.1, 2.0])}
    assert check_vjp(np.tanh, lambda dy, z: dy * (1 - np.tanh(z) ** 2), z, "z").status == "pass"
    r = check_vjp(np.multiply, lambda dy, x, w: dy * w, CASE, "x")
    assert r.status == "error"
    assert "multiply" in r.message and "wrap it" in r.message and "lambda x, w" in r.message


def test_a_positional_only_name_missing_from_the_case_is_named():
    def typo(dy, q, /, x):
        return dy

    r = check_vjp(_fwd, typo, CASE, "x")
    assert r.status == "error"
    assert "positional-only parameter 'q'" in r.message and "typo" in r.message
