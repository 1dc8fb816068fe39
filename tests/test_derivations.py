"""The seed's four derivations: forwards against naive loops, batching, VJP shapes and a
plain central-difference sanity check of every reference VJP (the real engine is tested
elsewhere)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import derivations.conv2d as conv_mod
import derivations.linear as linear_mod
import derivations.maxpool2d as pool_mod
import derivations.softmax_ce as softmax_mod
from gradcheck.declare import Derivation

DERIVATIONS = {
    "softmax_ce": softmax_mod.softmax_ce,
    "linear": linear_mod.linear,
    "conv2d": conv_mod.conv2d,
    "maxpool2d": pool_mod.maxpool2d,
}
# The benchmark's medium sizes (benchmarks/bench.py).
MEDIUM = {
    "softmax_ce": lambda rng: {"y": rng.standard_normal(1000), "gt": 3},
    "linear": lambda rng: {"W": rng.standard_normal((64, 128)), "x": rng.standard_normal(128),
                           "b": rng.standard_normal(64)},
    "conv2d": lambda rng: {"x": rng.standard_normal((3, 32, 32)),
                           "W": rng.standard_normal((8, 3, 3, 3)), "b": rng.standard_normal(8),
                           "s": 1},
    "maxpool2d": lambda rng: {"x": rng.standard_normal((16, 32, 32)), "M": 2, "N": 2, "s": 2},
}
# Magnitudes kept modest where a plain central difference would drown in rounding.
SANITY_CASES = {
    "softmax_ce": softmax_mod.cases(),
    "linear": linear_mod.cases(max_magnitude=10.0),
    "conv2d": conv_mod.cases(),
    "maxpool2d": pool_mod.cases(),
}


# ---------------------------------------------------------------- naive forwards


def naive_softmax_ce(y: np.ndarray, gt: int) -> float:
    top = max(y)
    total = sum(math.exp(v - top) for v in y)
    return -(y[gt] - top - math.log(total))


def naive_linear(W: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    m, n = W.shape
    return np.array([sum(W[i, j] * x[j] for j in range(n)) + b[i] for i in range(m)])


def naive_conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    T, H, Wd = x.shape
    K, _, M, N = W.shape
    Ho, Wo = (H - M) // s + 1, (Wd - N) // s + 1
    y = np.zeros((K, Ho, Wo))
    for k, i, j in itertools.product(range(K), range(Ho), range(Wo)):
        acc = b[k]
        for t, m, n in itertools.product(range(T), range(M), range(N)):
            acc += x[t, i * s + m, j * s + n] * W[k, t, m, n]
        y[k, i, j] = acc
    return y


def naive_maxpool2d(x: np.ndarray, M: int, N: int, s: int) -> np.ndarray:
    C, H, Wd = x.shape
    Ho, Wo = (H - M) // s + 1, (Wd - N) // s + 1
    y = np.zeros((C, Ho, Wo))
    for c, i, j in itertools.product(range(C), range(Ho), range(Wo)):
        y[c, i, j] = max(
            x[c, i * s + m, j * s + n] for m, n in itertools.product(range(M), range(N))
        )
    return y


NAIVE = {
    "softmax_ce": naive_softmax_ce,
    "linear": naive_linear,
    "conv2d": naive_conv2d,
    "maxpool2d": naive_maxpool2d,
}


def float_args(case: dict[str, Any]) -> list[str]:
    return [k for k, v in case.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]


def draw_dy(data: st.DataObject, shape: tuple[int, ...]) -> np.ndarray:
    return data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-2.0, 2.0)), label="dy")


# ---------------------------------------------------------------- tests


def test_each_module_declares_one_derivation() -> None:
    for name, module in [
        ("softmax_ce", softmax_mod),
        ("linear", linear_mod),
        ("conv2d", conv_mod),
        ("maxpool2d", pool_mod),
    ]:
        found = [v for v in vars(module).values() if isinstance(v, Derivation)]
        assert [d.name for d in found] == [name]
        d = found[0]
        assert d.batched and d.classify is not None
        assert d.source.startswith("seed 000_9b7afb4d4bc9848f, Problem ")
        variants = {(f.wrt, f.variant) for f in d.formulas}
        wrts = {f.wrt for f in d.formulas}
        assert variants == {(w, v) for w in wrts for v in ("as-written", "reference")}
        assert all(f.text for f in d.formulas)
        assert all(f.expect == "pass" for f in d.formulas if f.variant == "reference")


@pytest.mark.parametrize("name", sorted(DERIVATIONS))
def test_forward_matches_naive_loops(name: str) -> None:
    d = DERIVATIONS[name]

    @settings(max_examples=40, deadline=None)
    @given(d.cases)
    def check(case: dict[str, Any]) -> None:
        got = d.forward(**case)
        want = np.asarray(NAIVE[name](**case))
        assert got.shape == want.shape
        scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale)

    check()


@pytest.mark.parametrize("name", sorted(DERIVATIONS))
def test_batched_forward_stacks_per_sample_forwards(name: str) -> None:
    d = DERIVATIONS[name]

    @settings(max_examples=30, deadline=None)
    @given(d.cases, st.data())
    def check(case: dict[str, Any], data: st.DataObject) -> None:
        for arg in float_args(case):
            # Shifting by a constant keeps max-pool values separated; batches of 1 to 40
            # rows, as the engine's chunks vary, and a BLAS product may tile by size.
            shifts = data.draw(st.lists(st.sampled_from([0.0, 0.375, -1.25, 2.5, -0.125]),
                                        min_size=1, max_size=40), label=f"shifts of {arg}")
            copies = [case[arg] + shift for shift in shifts]
            batched = d.forward(**{**case, arg: np.stack(copies)})
            single = np.stack([d.forward(**{**case, arg: c}) for c in copies])
            assert batched.shape == single.shape
            np.testing.assert_array_equal(batched, single)

    check()


@pytest.mark.parametrize("name", sorted(DERIVATIONS))
@pytest.mark.parametrize("rows", [1, 5, 29, 64])
def test_batched_forward_rounds_like_single_calls_at_benchmark_sizes(name: str, rows: int) -> None:
    # The benchmark's medium sizes: larger matrix products than hypothesis draws, where a
    # BLAS call could tile or thread differently.
    rng = np.random.default_rng(rows)
    case = MEDIUM[name](rng)
    for arg in float_args(case):
        copies = [case[arg] + rng.standard_normal(case[arg].shape) for _ in range(rows)]
        forward = DERIVATIONS[name].forward
        batched = forward(**{**case, arg: np.stack(copies)})
        single = np.stack([forward(**{**case, arg: c}) for c in copies])
        np.testing.assert_array_equal(batched, single)


@pytest.mark.parametrize("name", sorted(DERIVATIONS))
def test_every_vjp_returns_its_argument_shape(name: str) -> None:
    d = DERIVATIONS[name]

    @settings(max_examples=20, deadline=None)
    @given(d.cases, st.data())
    def check(case: dict[str, Any], data: st.DataObject) -> None:
        dy = draw_dy(data, np.shape(d.forward(**case)))
        for f in d.formulas:
            grad = np.asarray(f.vjp(dy, **case))
            assert grad.shape == np.shape(case[f.wrt]), f.id
            assert np.all(np.isfinite(grad)), f.id

    check()


def central_difference(d: Derivation, case: dict[str, Any], wrt: str, dy: np.ndarray):
    h = 1e-6
    x = case[wrt]
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        vals = []
        for sign in (1.0, -1.0):
            xp = x.copy()
            xp[idx] += sign * h
            vals.append(float(np.sum(dy * d.forward(**{**case, wrt: xp}))))
        grad[idx] = (vals[0] - vals[1]) / (2 * h)
    return grad


@pytest.mark.parametrize("name", sorted(DERIVATIONS))
def test_reference_vjps_match_a_central_difference(name: str) -> None:
    d = DERIVATIONS[name]

    @settings(max_examples=25, deadline=None)
    @given(SANITY_CASES[name], st.data())
    def check(case: dict[str, Any], data: st.DataObject) -> None:
        dy = draw_dy(data, np.shape(d.forward(**case)))
        for f in d.formulas:
            if f.variant != "reference":
                continue
            analytic = np.asarray(f.vjp(dy, **case))
            numeric = central_difference(d, case, f.wrt, dy)
            scale = max(1.0, float(np.max(np.abs(analytic), initial=0.0)))
            assert np.max(np.abs(analytic - numeric), initial=0.0) <= 1e-6 * scale, f.id

    check()


@pytest.mark.parametrize("name", sorted(DERIVATIONS))
def test_classify_names_a_class(name: str) -> None:
    d = DERIVATIONS[name]
    classes = {
        "softmax_ce": {"n=2", "n>2"},
        "linear": {"square", "wide", "tall"},
    }

    @settings(max_examples=20, deadline=None)
    @given(d.cases)
    def check(case: dict[str, Any]) -> None:
        label = d.classify(case)
        allowed = classes.get(name)
        if allowed is None:
            assert label in {"overlap", "tile", "gap"} or label.startswith("mixed:")
        else:
            assert label in allowed

    check()


# ---------------------------------------------------------------- readings


def formula(d: Derivation, wrt: str, variant: str) -> Any:
    return next(f.vjp for f in d.formulas if f.wrt == wrt and f.variant == variant)


def test_softmax_as_written_keeps_p_gt_off_target() -> None:
    y, gt = np.array([1.0, 2.0, 0.5]), 1
    p = np.exp(y) / np.exp(y).sum()
    dy = np.array(2.0)
    got = formula(softmax_mod.softmax_ce, "y", "as-written")(dy, y=y, gt=gt)
    np.testing.assert_allclose(got, 2.0 * np.array([p[1], p[1] - 1, p[1]]))
    ref = formula(softmax_mod.softmax_ce, "y", "reference")(dy, y=y, gt=gt)
    np.testing.assert_allclose(ref, 2.0 * (p - np.eye(3)[gt]))


def test_conv_as_written_takes_free_indices_at_zero() -> None:
    rng = np.random.default_rng(12345)
    case = {
        "x": rng.standard_normal((2, 5, 5)),
        "W": rng.standard_normal((3, 2, 2, 2)),
        "b": rng.standard_normal(3),
        "s": 1,
    }
    dy = rng.standard_normal((3, 4, 4))
    d = conv_mod.conv2d
    np.testing.assert_allclose(
        formula(d, "W", "as-written")(dy, **case),
        dy[:, 0, 0, None, None, None] * case["x"][None, :, :2, :2],
    )
    np.testing.assert_allclose(formula(d, "b", "as-written")(dy, **case), dy[:, 0, 0])
    dx = formula(d, "x", "as-written")(dy, **case)
    np.testing.assert_allclose(dx[:, :2, :2], dy[0, 0, 0] * case["W"][0])
    assert not np.any(dx[:, 2:, :]) and not np.any(dx[:, :, 2:])


@settings(max_examples=20, deadline=None)
@given(conv_mod.cases(max_out=1, max_channels=1), st.data())
def test_conv_as_written_equals_reference_with_one_output_and_one_filter(
    case: dict[str, Any], data: st.DataObject
) -> None:
    d = conv_mod.conv2d
    dy = draw_dy(data, np.shape(d.forward(**case)))
    for wrt in ("W", "b", "x"):
        np.testing.assert_allclose(
            formula(d, wrt, "as-written")(dy, **case), formula(d, wrt, "reference")(dy, **case)
        )


def shared_argmax(x: np.ndarray, M: int, N: int, s: int) -> bool:
    """Naively: is some element the argmax of two or more windows?"""
    C, H, Wd = x.shape
    winners = []
    for c, i, j in itertools.product(range(C), range((H - M) // s + 1), range((Wd - N) // s + 1)):
        cells = [(c, i * s + m, j * s + n) for m, n in itertools.product(range(M), range(N))]
        winners.append(max(cells, key=lambda p: x[p]))
    return len(set(winners)) < len(winners)


@settings(max_examples=60, deadline=None)
@given(pool_mod.cases(), st.data())
def test_maxpool_variants_differ_exactly_when_windows_share_an_argmax(
    case: dict[str, Any], data: st.DataObject
) -> None:
    d = pool_mod.maxpool2d
    shape = np.shape(d.forward(**case))
    dy = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0.5, 2.0)), label="dy")
    written = formula(d, "x", "as-written")(dy, **case)
    reference = formula(d, "x", "reference")(dy, **case)
    assert (not np.array_equal(written, reference)) == shared_argmax(**case)


def test_maxpool_hand_built_overlap() -> None:
    d = pool_mod.maxpool2d
    dy = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    # Centre is the max of all four 2x2 windows at stride 1.
    x = np.array([[[1.0, 2.0, 3.0], [4.0, 9.0, 5.0], [6.0, 7.0, 8.0]]])
    case = {"x": x, "M": 2, "N": 2, "s": 1}
    np.testing.assert_array_equal(d.forward(**case), [[[9.0, 9.0], [9.0, 9.0]]])
    reference = formula(d, "x", "reference")(dy, **case)
    written = formula(d, "x", "as-written")(dy, **case)
    assert reference[0, 1, 1] == 10.0 and np.count_nonzero(reference) == 1
    assert written[0, 1, 1] == 4.0 and np.count_nonzero(written) == 1  # last window wins
    # Increasing values: each window's max is its own bottom-right corner, nothing shared.
    distinct = {"x": np.arange(9.0).reshape(1, 3, 3), "M": 2, "N": 2, "s": 1}
    np.testing.assert_array_equal(
        formula(d, "x", "as-written")(dy, **distinct), formula(d, "x", "reference")(dy, **distinct)
    )


def test_softmax_forward_runs_in_float32_when_asked():
    from gradcheck import check_vjp

    y = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    assert softmax_mod.forward(y, 1).dtype == np.float32
    result = check_vjp(softmax_mod.forward, softmax_mod.dy_reference, {"y": y, "gt": 1}, "y",
                       dtype=np.float32, batched=True)
    assert result.status == "pass" and result.dtype == "float32", result.explain()
