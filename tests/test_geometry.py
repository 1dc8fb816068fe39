"""Window geometry with padding and dilation, spaced arrays and index arrays: valid by
construction, every option reached, arguments validated; and a max-pool with padding
checked with them, right and with the unpadded-coordinates bug."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from gradcheck import Derivation
from gradcheck.runner import Settings, run_formula
from gradcheck.strategies import REGIMES, Window, index_arrays, spaced_arrays, windows


def taps(w: Window, axis: int) -> list[list[int]]:
    """Input positions (unpadded coordinates) each window reads on ``axis``."""
    return [[i * w.stride[axis] - w.padding[axis] + j * w.dilation[axis]
             for j in range(w.kernel[axis])] for i in range(w.out[axis])]


def check_window(w: Window, *, touching: bool = True) -> None:
    for a in range(w.ndim):
        padded = w.size[a] + 2 * w.padding[a]
        assert w.size[a] >= 1
        assert (padded - w.span[a]) // w.stride[a] + 1 == w.out[a]  # as frameworks compute it
        last = taps(w, a)[-1][-1] + w.padding[a]
        assert padded - 1 - w.stride[a] < last <= padded - 1  # no further window fits
        assert padded - 1 - last == w.leftover[a]
        if touching:
            assert all(any(0 <= t < w.size[a] for t in ts) for ts in taps(w, a))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_windows_are_consistent_in_1_2_and_3_dimensions(data):
    ndim = data.draw(st.integers(1, 3))
    w = data.draw(windows(ndim, max_out=3, max_kernel=4, max_stride=3, max_dilation=3,
                          max_padding=3))
    assert w.ndim == ndim
    assert max(w.kernel) <= 4 and max(w.stride) <= 3 and max(w.dilation) <= 3
    assert max(w.padding) <= 3 and max(w.out) <= 3
    check_window(w)


@settings(max_examples=200, deadline=None)
@given(windows(2, max_padding=4, max_dilation=2, empty_windows=True))
def test_empty_windows_allowed_keep_the_input_non_empty(w):
    check_window(w, touching=False)


@settings(max_examples=100, deadline=None)
@given(windows(2, max_padding=3, max_dilation=3, half_window_padding=True))
def test_half_window_padding_is_pytorchs_pooling_rule(w):
    assert all(2 * p <= s for p, s in zip(w.padding, w.span, strict=True))
    check_window(w)


@pytest.mark.parametrize("tiling", ["exact", "remainder"])
def test_tiling_exact_and_with_a_remainder(tiling):
    @settings(max_examples=100, deadline=None)
    @given(windows(2, max_padding=2, tiling=tiling))
    def check(w):
        check_window(w)
        if tiling == "exact":
            assert w.leftover == (0, 0)
        else:
            assert all(0 < r < s for r, s in zip(w.leftover, w.stride, strict=True))

    check()


def test_every_option_is_reached():
    seen: dict[str, set] = {"regime": set(), "padding": set(), "dilation": set(),
                            "leftover": set()}

    @settings(max_examples=400, deadline=None)
    @given(windows(2, max_padding=2, max_dilation=2))
    def collect(w):
        seen["regime"].add(w.regime)
        seen["padding"].update(w.padding)
        seen["dilation"].update(w.dilation)
        seen["leftover"].update(w.leftover)

    collect()
    assert set(REGIMES) <= seen["regime"] and any(r.startswith("mixed:") for r in seen["regime"])
    assert seen["padding"] == {0, 1, 2} and seen["dilation"] == {1, 2}
    assert seen["leftover"] == {0, 1, 2}


@pytest.mark.parametrize("regime", REGIMES)
def test_each_regime_alone_with_dilation(regime):
    @settings(max_examples=40, deadline=None)
    @given(windows(3, max_dilation=2, regimes=(regime,)))
    def check(w):
        assert w.axis_regimes == (regime,) * 3

    check()


@settings(max_examples=60, deadline=None)
@given(windows(3, max_padding=2, max_dilation=2, uniform=True))
def test_uniform_windows_share_kernel_stride_dilation_and_padding(w):
    for field in (w.kernel, w.stride, w.dilation, w.padding):
        assert len(set(field)) == 1
    check_window(w)


@pytest.mark.parametrize("kwargs, message", [
    ({"ndim": 0}, "ndim must be >= 1, got ndim=0"),
    ({"max_padding": -1}, "max_padding must be >= 0, got max_padding=-1"),
    ({"tiling": "tight"}, "tiling must be one of"),
    ({"tiling": "remainder", "max_stride": 1}, "needs a stride >= 2, got max_stride=1"),
    ({"regimes": ("overlap",), "max_kernel": 1}, "needs max_kernel >= 2"),
    ({"regimes": ("tile",), "max_kernel": 1, "tiling": "remainder"}, "cannot be drawn"),
])
def test_windows_arguments_are_validated_naming_the_parameter(kwargs, message):
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        windows(**kwargs)


def test_window_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="inconsistent"):
        Window(size=(3,), kernel=(2,), stride=(1,), dilation=(1,), padding=(0,), out=(3,),
               leftover=(0,))


# ---------------------------------------------------------------- spaced and index arrays


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_spaced_arrays_keep_the_gap_and_the_margin(data):
    avoid = data.draw(st.lists(st.floats(-5, 5), max_size=3))
    gap = data.draw(st.sampled_from([1e-3, 0.5, 1.0]))
    margin = data.draw(st.sampled_from([0.0, 1e-3, 0.25, 2.0]))
    x = data.draw(spaced_arrays(data.draw(st.integers(1, 12)), gap=gap, avoid=avoid,
                                margin=margin))
    v = np.sort(x.reshape(-1))
    assert np.all(np.diff(v) >= gap)
    for a in avoid:
        assert np.all(np.abs(v - a) >= margin)


def test_spaced_arrays_straddle_an_avoided_zero():
    signs = set()

    @settings(max_examples=60, deadline=None)
    @given(spaced_arrays((2, 3), gap=0.5, avoid=(0.0,), margin=0.1))
    def collect(x):
        signs.update(np.sign(x).reshape(-1).tolist())

    collect()
    assert signs == {-1.0, 1.0}


@pytest.mark.parametrize("kwargs, message", [
    ({"gap": 0}, "gap must be finite and > 0"),
    ({"margin": -1.0}, "margin must be finite and >= 0"),
    ({"avoid": ("a",)}, "avoid must be real numbers"),
    ({"avoid": (np.inf,)}, "avoid must be finite"),
])
def test_spaced_arrays_arguments_are_validated(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        spaced_arrays((2,), **kwargs)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_index_arrays_repeat_some_any_none(data):
    n = data.draw(st.integers(1, 6))
    repeats = data.draw(st.sampled_from(["some", "any", "none"]))
    size = data.draw(st.integers(2, 8) if repeats == "some" else st.integers(1, n))
    ids = data.draw(index_arrays((size,), n, repeats=repeats))
    assert ids.dtype == np.int64 and ids.shape == (size,)
    assert ids.min() >= 0 and ids.max() < n
    if repeats == "some":
        assert len(set(ids.tolist())) < size
    if repeats == "none":
        assert len(set(ids.tolist())) == size


def test_index_arrays_arguments_are_validated():
    with pytest.raises(InvalidArgument, match="n must be >= 1, got n=0"):
        index_arrays((2,), 0)
    with pytest.raises(InvalidArgument, match="repeats must be one of"):
        index_arrays((2,), 3, repeats="twice")
    with pytest.raises(InvalidArgument, match="at least 2 elements"):
        index_arrays((1,), 3)
    with pytest.raises(InvalidArgument, match="at most n=2 elements"):
        index_arrays((3,), 2, repeats="none")


# ---------------------------------------------------------------- max-pool with padding


def maxpool(x, w, fill=-np.inf):
    """Max-pool over the last len(w) axes with w's padding (by fill), dilation and stride."""
    pad = np.pad(x, ((0, 0),) + w.pad_width, constant_values=fill)
    out = np.empty((x.shape[0], *w.out))
    for c, *o in itertools.product(range(x.shape[0]), *map(range, w.out)):
        out[(c, *o)] = pad[(c, *(slice(i * s, i * s + sp, d) for i, s, sp, d in
                                  zip(o, w.stride, w.span, w.dilation, strict=True)))].max()
    return out


def maxpool_backward(dy, x, w, fill=-np.inf, *, unpadded_coordinates=False):
    pad = np.pad(x, ((0, 0),) + w.pad_width, constant_values=fill)
    src = x if unpadded_coordinates else pad  # the real bug: padded offsets into x
    dpad = np.zeros_like(pad)
    for c, *o in itertools.product(range(x.shape[0]), *map(range, w.out)):
        win = tuple(slice(i * s, i * s + sp, d) for i, s, sp, d in
                    zip(o, w.stride, w.span, w.dilation, strict=True))
        region = src[(c, *win)]
        if region.size == 0:
            continue
        j = np.unravel_index(np.argmax(region), region.shape)
        at = tuple(sl.start + k * sl.step for sl, k in zip(win, j, strict=True))
        dpad[(c, *at)] += dy[(c, *o)]
    inner = tuple(slice(p, p + n) for p, n in zip(w.padding, w.size, strict=True))
    return dpad[(slice(None), *inner)]


def pool_cases():
    geometry = windows(2, max_out=2, max_kernel=3, max_stride=2, max_dilation=2,
                       max_padding=1)
    return geometry.flatmap(lambda w: st.fixed_dictionaries({
        "x": spaced_arrays((2, *w.size)), "w": st.just(w)}))


def test_maxpool_with_padding_right_and_with_unpadded_coordinates():
    d = Derivation("pool", maxpool, cases=pool_cases())
    d.formula("x", maxpool_backward)
    d.formula("x", lambda dy, x, w: maxpool_backward(dy, x, w, unpadded_coordinates=True),
              variant="as-written", expect="fail")
    good, bad = (run_formula(f, Settings(examples=40, seed=0)) for f in d.formulas)
    assert good.status == "pass", good.failing_result and good.failing_result.explain()
    assert bad.status == "fail" and bad.counterexample["status"] == "fail"
    assert "padding=(0, 0)" not in bad.counterexample["params"]["w"]  # needs padding to show


def test_maxpool_padded_with_zeros_over_values_kept_off_zero():
    """A zero pad competes with the input for the maximum: values kept a margin away from 0
    never tie with it, so a right backward passes with no kink, and one that always credits
    the input fails."""
    geometry = windows(2, max_out=2, max_kernel=3, max_stride=2, max_padding=1)
    cases = geometry.flatmap(lambda w: st.fixed_dictionaries({
        "x": spaced_arrays((1, *w.size), gap=0.5, avoid=(0.0,), margin=0.5, offset_scale=4.0),
        "w": st.just(w), "fill": st.just(0.0)}))
    d = Derivation("zpool", maxpool, cases=cases)
    d.formula("x", maxpool_backward)
    d.formula("x", lambda dy, x, w, fill: maxpool_backward(dy, x, w, -np.inf),
              variant="as-written", expect="fail")
    good, bad = (run_formula(f, Settings(examples=40, seed=2)) for f in d.formulas)
    assert good.status == "pass", good.failing_result and good.failing_result.explain()
    assert bad.status == "fail", bad.message
