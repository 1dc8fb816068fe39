"""Invariants of gradcheck.strategies: geometry by construction, separation, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from numpy.lib.stride_tricks import sliding_window_view

from gradcheck.strategies import (
    REGIMES,
    WindowGeometry,
    class_labels,
    float_arrays,
    separated_arrays,
    small_shapes,
    window_geometry,
    window_regime,
)


@settings(max_examples=150)
@given(window_geometry())
def test_window_geometry_sizes_are_consistent(g: WindowGeometry) -> None:
    s = g.stride
    assert g.out[0] >= 1 and g.out[1] >= 1
    for a in range(2):
        assert 0 <= g.leftover[a] < s
        assert g.size[a] == (g.out[a] - 1) * s + g.kernel[a] + g.leftover[a]
        assert (g.size[a] - g.kernel[a]) // s + 1 == g.out[a]
    x = np.zeros(g.size)
    windows = sliding_window_view(x, g.kernel)[::s, ::s]
    assert windows.shape[:2] == g.out


@settings(max_examples=100)
@given(window_geometry(max_out=2, max_kernel=4, max_stride=4))
def test_window_geometry_respects_maxima(g: WindowGeometry) -> None:
    assert max(g.out) <= 2 and max(g.kernel) <= 4 and 1 <= g.stride <= 4


@pytest.mark.parametrize("regime", REGIMES)
def test_each_regime_alone(regime: str) -> None:
    @settings(max_examples=30)
    @given(window_geometry(regimes=(regime,)))
    def check(g: WindowGeometry) -> None:
        assert g.regime == regime
        assert g.axis_regimes == (regime, regime)

    check()


def test_all_regimes_and_mixtures_are_generated() -> None:
    seen: set[str] = set()

    @settings(max_examples=300)
    @given(window_geometry())
    def collect(g: WindowGeometry) -> None:
        seen.add(g.regime)

    collect()
    assert set(REGIMES) <= seen
    assert any(r.startswith("mixed:") for r in seen)


def test_regime_names() -> None:
    assert window_regime((3, 3), 1) == "overlap"
    assert window_regime((2, 2), 2) == "tile"
    assert window_regime((1, 2), 3) == "gap"
    assert window_regime((3, 2), 2) == "mixed:overlap/tile"


@pytest.mark.parametrize(
    "regime, kernel, stride",
    [("gap", (1, 1), 2), ("overlap", (2, 2), 1), ("tile", (1, 1), 1)],
)
def test_shrinking_reaches_small_geometries(regime: str, kernel: tuple, stride: int) -> None:
    g = find(window_geometry(), lambda g: g.regime == regime)
    assert (g.kernel, g.stride, g.out, g.leftover) == (kernel, stride, (1, 1), (0, 0))


def test_inconsistent_geometry_is_rejected() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        WindowGeometry(out=(1, 1), kernel=(2, 2), stride=1, leftover=(0, 0), size=(3, 2))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"max_kernel": 0}, "max_kernel must be >= 1, got max_kernel=0"),
        ({"max_out": 0}, "max_out must be >= 1, got max_out=0"),
        ({"max_stride": -2}, "max_stride must be >= 1, got max_stride=-2"),
        ({"max_stride": 1.5}, "max_stride must be an integer, got max_stride=1.5"),
        ({"max_kernel": 1}, "needs max_kernel >= 2, got max_kernel=1"),
        ({"max_stride": 1}, "needs max_stride >= 2, got max_stride=1"),
        ({"regimes": ()}, "regimes=()"),
        ({"regimes": ("gap", "holes")}, "'holes'"),
        ({"regimes": "gap"}, "regimes='gap'"),
    ],
)
def test_window_geometry_argument_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        window_geometry(**kwargs)
    assert fragment in str(info.value)


def test_restricted_regimes_allow_small_maxima() -> None:
    g = find(window_geometry(max_kernel=1, max_stride=1, regimes=("tile",)), lambda g: True)
    assert g.kernel == (1, 1) and g.stride == 1


@settings(max_examples=100)
@given(separated_arrays(small_shapes(max_dims=3, max_side=5), gap=0.5))
def test_separated_arrays_keep_their_gap(x: np.ndarray) -> None:
    assert x.dtype == np.float64 and np.all(np.isfinite(x))
    values = np.sort(x.ravel())
    assert np.all(np.diff(values) >= 0.5)


@settings(max_examples=30)
@given(separated_arrays((2, 3)))
def test_separated_arrays_fixed_shape(x: np.ndarray) -> None:
    assert x.shape == (2, 3)
    assert np.min(np.diff(np.sort(x.ravel()))) >= 1.0


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"gap": 0.0}, "gap must be finite and > 0, got gap=0.0"),
        ({"gap": float("inf")}, "gap=inf"),
        ({"offset_scale": -1.0}, "offset_scale must be finite and >= 0, got offset_scale=-1.0"),
    ],
)
def test_separated_arrays_argument_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        separated_arrays((2,), **kwargs)
    assert fragment in str(info.value)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(InvalidArgument, match=r"shape must be a tuple .* got shape=\(2, -1\)"):
        float_arrays((2, -1))
    with pytest.raises(InvalidArgument, match="shape=.2, 'a'."):
        find(separated_arrays(st.just((2, "a"))), lambda x: True)


@settings(max_examples=50)
@given(st.integers(1, 20).flatmap(lambda n: st.tuples(st.just(n), class_labels(n))))
def test_class_labels_in_range(n_label: tuple[int, int]) -> None:
    n, label = n_label
    assert isinstance(label, int) and 0 <= label < n


def test_class_labels_argument_error() -> None:
    with pytest.raises(InvalidArgument, match="n must be >= 1, got n=0"):
        class_labels(0)


@settings(max_examples=50)
@given(small_shapes(min_dims=2, max_dims=3, min_side=2, max_side=3))
def test_small_shapes_bounds(shape: tuple[int, ...]) -> None:
    assert 2 <= len(shape) <= 3 and all(2 <= d <= 3 for d in shape)


def test_small_shapes_shrink_and_errors() -> None:
    assert find(small_shapes(), lambda s: True) == (1,)
    with pytest.raises(InvalidArgument, match="max_dims must be >= 2, got max_dims=1"):
        small_shapes(min_dims=2, max_dims=1)
    with pytest.raises(InvalidArgument, match="min_side must be >= 0, got min_side=-1"):
        small_shapes(min_side=-1)


@settings(max_examples=100)
@given(float_arrays(small_shapes(max_side=5), max_magnitude=50.0))
def test_float_arrays_are_finite_and_bounded(x: np.ndarray) -> None:
    assert x.dtype == np.float64 and np.all(np.isfinite(x))
    assert np.all(np.abs(x) <= 50.0)


@pytest.mark.parametrize("value", [0.0, 1e-12, 2.2e-16, 1e3])
def test_float_arrays_reach_awkward_values(value: float) -> None:
    x = find(float_arrays((3,)), lambda x: bool(np.any(np.abs(x) == value)))
    assert value in np.abs(x)


def test_float_arrays_argument_error() -> None:
    with pytest.raises(InvalidArgument, match="max_magnitude must be finite and > 0"):
        float_arrays((2,), max_magnitude=0)
