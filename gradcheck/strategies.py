"""Hypothesis strategies for gradient-check cases: shapes, awkward floats, window geometry.

Every strategy builds valid values *by construction* (no ``.filter()``, no ``assume``),
draws small sizes first so that shrinking reaches small cases, and validates its arguments
eagerly, raising ``hypothesis.errors.InvalidArgument`` with the parameter, the bound and
the value (``"max_kernel must be >= 1, got max_kernel=0"``).

``small_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4)``
    Tuples of ints; shrinks towards fewer and shorter axes.
``float_arrays(shape, max_magnitude=1e3, min_magnitude=1e-20, special=())``
    Finite float64 arrays whose elements mix exact zeros, tiny magnitudes (1e-12, 2.2e-16),
    moderate values and large ones up to ``max_magnitude``: the values that break a naive
    element-wise relative error; magnitudes log-uniform over the whole range (every decade,
    where cancelling formulas lose their digits); and values near the ``special`` points
    (poles, domain edges, kinks). ``shape`` is a tuple (or int) or a strategy of tuples.
``separated_arrays(shape, gap=1.0, offset_scale=10.0)``
    float64 arrays whose values are pairwise at least ``gap`` apart, for max-pool style
    forwards where a finite-difference step must never change which element wins. Built as
    ``offset + (perm(arange(n)) - (n-1)/2) * 1.25*gap + jitter`` with a random permutation,
    jitter in ``[0, gap/8]`` per element and one common ``offset`` in
    ``[-offset_scale, offset_scale]``; neighbouring ranks are therefore at least
    ``1.25*gap - gap/8 > gap`` apart, with room to spare for rounding.
``class_labels(n)``
    An int in ``[0, n)``.
``window_geometry(max_out=3, max_kernel=3, max_stride=3, regimes=REGIMES)``
    A :class:`WindowGeometry` for a sliding window (convolution, pooling) with one stride
    ``s`` shared by both axes, a kernel ``(M, N)``, an output size ``(Ho, Wo) >= 1`` and a
    leftover ``0 <= r < s`` per axis, so the input size is ``(Ho-1)*s + M + r_h`` (likewise
    for the width). Each axis is in one *regime*: ``overlap`` (s < kernel side), ``tile``
    (s == kernel side) or ``gap`` (s > kernel side). The row regime is drawn first from
    ``regimes``, then the row kernel side and the stride are built to satisfy it, then the
    column regime is drawn among the requested regimes achievable with that stride.
    :attr:`WindowGeometry.regime` is the shared regime name when both axes agree, otherwise
    ``"mixed:<row>/<col>"`` (e.g. ``"mixed:overlap/tile"``).

Defined in their own modules and public here (``gradcheck.geometry``, ``gradcheck.spaced``):

``windows(ndim=2, max_out=3, max_kernel=3, max_stride=3, max_dilation=1, max_padding=0,
tiling="any", regimes=REGIMES, uniform=False, empty_windows=False, half_window_padding=False)``
    A :class:`Window` over 1, 2 or 3 (any) axes with per-axis kernel, stride, dilation,
    padding, window count and remainder; exact tiling, a remainder, or either; every
    window keeps a tap on the input itself unless ``empty_windows=True``.
``spaced_arrays(shape, gap=1.0, avoid=(), margin=gap, offset_scale=10.0)``
    float64 arrays with values pairwise ``gap`` apart and ``margin`` away from each point
    in ``avoid`` (a zero pad, a kink).
``index_arrays(shape, n, repeats="some")``
    int64 ids in ``[0, n)``: at least one repeated (``"some"``), free (``"any"``) or all
    distinct (``"none"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

# defined in their own modules, which import this one: loaded on first use (__getattr__)
_ELSEWHERE = {
    "TILINGS": "gradcheck.geometry", "Window": "gradcheck.geometry",
    "windows": "gradcheck.geometry", "REPEATS": "gradcheck.spaced",
    "index_arrays": "gradcheck.spaced", "spaced_arrays": "gradcheck.spaced",
}

__all__ = [
    "REGIMES",
    "WindowGeometry",
    "axis_regime",
    "class_labels",
    "float_arrays",
    "separated_arrays",
    "small_shapes",
    "window_geometry",
    "window_regime",
    *_ELSEWHERE,
]


def __getattr__(name: str) -> Any:
    """The strategies of gradcheck.geometry and gradcheck.spaced."""
    if name in _ELSEWHERE:
        import importlib

        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    raise AttributeError(f"module 'gradcheck.strategies' has no attribute {name!r}")

REGIMES = ("overlap", "tile", "gap")

Shape = tuple[int, ...]
ShapeArg = Any  # a tuple of ints, an int, or a SearchStrategy of those


# ---------------------------------------------------------------- argument checks


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name} must be an integer, got {name}={value!r}")
    if value < minimum:
        raise InvalidArgument(f"{name} must be >= {minimum}, got {name}={value!r}")
    return int(value)


def _check_float(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{name} must be a real number, got {name}={value!r}")
    v = float(value)
    bound = ">= 0" if allow_zero else "> 0"
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InvalidArgument(f"{name} must be finite and {bound}, got {name}={value!r}")
    return v


def _check_shape(name: str, shape: object) -> Shape:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, tuple) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidArgument(
            f"{name} must be a tuple of non-negative ints, got {name}={shape!r}"
        )
    return tuple(int(d) for d in shape)


def _shapes(name: str, shape: ShapeArg) -> st.SearchStrategy[Shape]:
    """A fixed shape (validated now) or a strategy of shapes (validated at draw time)."""
    if isinstance(shape, st.SearchStrategy):
        return shape.map(lambda s: _check_shape(name, s))
    return st.just(_check_shape(name, shape))


# ---------------------------------------------------------------- simple strategies


def small_shapes(
    *, min_dims: int = 1, max_dims: int = 2, min_side: int = 1, max_side: int = 4
) -> st.SearchStrategy[Shape]:
    """Shapes with ``min_dims..max_dims`` axes of ``min_side..max_side`` each."""
    min_dims = _check_int("min_dims", min_dims, 0)
    max_dims = _check_int("max_dims", max_dims, min_dims)
    min_side = _check_int("min_side", min_side, 0)
    max_side = _check_int("max_side", max_side, min_side)
    sides = st.integers(min_side, max_side)
    return st.lists(sides, min_size=min_dims, max_size=max_dims).map(tuple)


def class_labels(n: int) -> st.SearchStrategy[int]:
    """A class index in ``[0, n)``."""
    n = _check_int("n", n, 1)
    return st.integers(0, n - 1)


_AWKWARD = (1e-12, -1e-12, 2.2e-16, -2.2e-16, 1e-6, -1e-6, 1.0, -1.0)
SMALLEST = 1e-20  # log-uniform magnitudes from here: below eps^2 a value acts as 0 or tiny


def float_arrays(
    shape: ShapeArg,
    *,
    max_magnitude: float = 1e3,
    min_magnitude: float = SMALLEST,
    special: Iterable[float] = (),
) -> st.SearchStrategy[NDArray[np.float64]]:
    """Finite float64 arrays mixing zeros, awkward values (1e-12, 2.2e-16, 1e-6, 1,
    ``max_magnitude``), hypothesis' own floats, magnitudes drawn log-uniformly over
    ``[min_magnitude, max_magnitude]`` (so every decade comes up, 1e-10 .. 1e-7 included,
    where formulas like (x cos x - sin x) / x^2 lose all their digits), and values close to
    the ``special`` points (poles, domain edges, kinks: p +- |p| 10^-k, or +-10^-k at 0, for
    k log-uniform down to the float64 resolution)."""
    big = _check_float("max_magnitude", max_magnitude, allow_zero=False)
    small = _check_float("min_magnitude", min_magnitude, allow_zero=False)
    if small > big:
        raise InvalidArgument(f"min_magnitude must be <= max_magnitude={big!r}, got "
                              f"min_magnitude={min_magnitude!r}")
    points = tuple(_check_float_any("special", p) for p in special)
    specials = [v for v in _AWKWARD if abs(v) <= big] + [big, -big]
    signs = st.sampled_from([1.0, -1.0])
    decades = st.floats(math.log10(small), math.log10(big))
    log_uniform = st.builds(lambda s, e: s * min(big, max(small, 10.0**e)), signs, decades)
    parts = [
        st.just(0.0),
        st.floats(-big, big, allow_nan=False, allow_infinity=False, allow_subnormal=False),
        st.sampled_from(specials),
        log_uniform,
    ]
    if points:
        offsets = st.floats(-16.0, 0.0)  # relative distance 10^-16 .. 1
        near = st.builds(_near, st.sampled_from(points), signs, offsets)
        parts.append(near.map(lambda v: min(big, max(-big, v))))
    elements = st.one_of(*parts)
    return _shapes("shape", shape).flatmap(
        lambda shp: hnp.arrays(np.float64, shp, elements=elements, fill=st.nothing())
    )


def _near(p: float, sign: float, exponent: float) -> float:
    return p + sign * max(abs(p), 1.0) * 10.0**exponent


def _check_float_any(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{name} must hold real numbers, got {value!r} in {name}")
    if not math.isfinite(float(value)):
        raise InvalidArgument(f"{name} must hold finite numbers, got {value!r} in {name}")
    return float(value)


def separated_arrays(
    shape: ShapeArg, *, gap: float = 1.0, offset_scale: float = 10.0
) -> st.SearchStrategy[NDArray[np.float64]]:
    """float64 arrays whose values are pairwise at least ``gap`` apart (see module docstring)."""
    gap = _check_float("gap", gap, allow_zero=False)
    offset_scale = _check_float("offset_scale", offset_scale, allow_zero=True)
    return _shapes("shape", shape).flatmap(lambda shp: _separated(shp, gap, offset_scale))


@st.composite
def _separated(
    draw: st.DrawFn, shape: Shape, gap: float, offset_scale: float
) -> NDArray[np.float64]:
    n = math.prod(shape)
    spacing = 1.25 * gap
    span = offset_scale + spacing * n
    # The margin above ``gap`` is gap/8; rounding of values up to ``span`` must stay far below.
    if not math.isfinite(span) or span * 2.0**-52 > gap / 64:
        raise InvalidArgument(
            f"offset_scale and gap too far apart for {n} elements: values up to {span:g}"
            f" cannot keep gap={gap!r} (got offset_scale={offset_scale!r})"
        )
    ranks = np.array(draw(st.permutations(range(n))), dtype=np.float64)
    jitter = draw(hnp.arrays(np.float64, n, elements=st.floats(0.0, gap / 8)))
    offset = draw(st.floats(-offset_scale, offset_scale)) if offset_scale > 0 else 0.0
    values = offset + (ranks - (n - 1) / 2) * spacing + jitter
    return values.reshape(shape)


# ---------------------------------------------------------------- window geometry


def axis_regime(kernel: int, stride: int) -> str:
    """``"overlap"`` if stride < kernel, ``"tile"`` if equal, ``"gap"`` if stride > kernel."""
    return "overlap" if stride < kernel else "tile" if stride == kernel else "gap"


def window_regime(kernel: tuple[int, int], stride: int) -> str:
    """The regime of a 2-D window: one name if both axes agree, else ``"mixed:<row>/<col>"``."""
    row, col = (axis_regime(k, stride) for k in kernel)
    return row if row == col else f"mixed:{row}/{col}"


@dataclass(frozen=True)
class WindowGeometry:
    """A 2-D sliding window: ``size[a] == (out[a]-1)*stride + kernel[a] + leftover[a]``."""

    out: tuple[int, int]
    kernel: tuple[int, int]
    stride: int
    leftover: tuple[int, int]
    size: tuple[int, int]

    def __post_init__(self) -> None:
        for a in range(2):
            want = (self.out[a] - 1) * self.stride + self.kernel[a] + self.leftover[a]
            if self.size[a] != want or not 0 <= self.leftover[a] < self.stride:
                raise ValueError(f"inconsistent window geometry: {self!r}")

    @property
    def axis_regimes(self) -> tuple[str, str]:
        return axis_regime(self.kernel[0], self.stride), axis_regime(self.kernel[1], self.stride)

    @property
    def regime(self) -> str:
        return window_regime(self.kernel, self.stride)


def _check_regimes(regimes: Iterable[str], max_kernel: int, max_stride: int) -> tuple[str, ...]:
    if isinstance(regimes, str):
        raise InvalidArgument(
            f"regimes must be a tuple of regime names, got regimes={regimes!r}"
            f" (write regimes=({regimes!r},))"
        )
    chosen = tuple(dict.fromkeys(regimes))
    if not chosen:
        raise InvalidArgument(f"regimes must name at least one of {REGIMES}, got regimes=()")
    for r in chosen:
        if r not in REGIMES:
            raise InvalidArgument(
                f"regimes must be drawn from {REGIMES}, got {r!r} in regimes={regimes!r}"
            )
    if "overlap" in chosen and max_kernel < 2:
        raise InvalidArgument(
            f"regime 'overlap' (stride < kernel) needs max_kernel >= 2, got max_kernel={max_kernel}"
        )
    if "gap" in chosen and max_stride < 2:
        raise InvalidArgument(
            f"regime 'gap' (stride > kernel) needs max_stride >= 2, got max_stride={max_stride}"
        )
    return chosen


def window_geometry(
    *,
    max_out: int = 3,
    max_kernel: int = 3,
    max_stride: int = 3,
    regimes: Iterable[str] = REGIMES,
) -> st.SearchStrategy[WindowGeometry]:
    """Sliding-window geometries with one shared stride; see the module docstring."""
    max_out = _check_int("max_out", max_out, 1)
    max_kernel = _check_int("max_kernel", max_kernel, 1)
    max_stride = _check_int("max_stride", max_stride, 1)
    chosen = _check_regimes(regimes, max_kernel, max_stride)
    return _window_geometry(max_out, max_kernel, max_stride, chosen)


def _col_achievable(regime: str, stride: int, max_kernel: int) -> bool:
    return {"overlap": stride < max_kernel, "tile": stride <= max_kernel, "gap": stride >= 2}[
        regime
    ]


@st.composite
def _window_geometry(
    draw: st.DrawFn, max_out: int, max_kernel: int, max_stride: int, regimes: tuple[str, ...]
) -> WindowGeometry:
    row = draw(st.sampled_from(regimes))
    if row == "overlap":  # 1 <= s < M
        m = draw(st.integers(2, max_kernel))
        s = draw(st.integers(1, min(m - 1, max_stride)))
    elif row == "tile":  # s == M
        m = s = draw(st.integers(1, min(max_kernel, max_stride)))
    else:  # gap: M < s
        m = draw(st.integers(1, min(max_kernel, max_stride - 1)))
        s = draw(st.integers(m + 1, max_stride))
    # The row's own regime comes first (always achievable: N == M), so shrinking prefers a
    # uniform geometry and the column's choice keeps its meaning when the stride shrinks.
    others = [r for r in regimes if r != row and _col_achievable(r, s, max_kernel)]
    col = draw(st.sampled_from([row, *others]))
    if col == "overlap":
        n = draw(st.integers(s + 1, max_kernel))
    elif col == "tile":
        n = s
    else:
        n = draw(st.integers(1, s - 1))
    out = (draw(st.integers(1, max_out)), draw(st.integers(1, max_out)))
    leftover = (draw(st.integers(0, s - 1)), draw(st.integers(0, s - 1)))
    size = (
        (out[0] - 1) * s + m + leftover[0],
        (out[1] - 1) * s + n + leftover[1],
    )
    return WindowGeometry(out=out, kernel=(m, n), stride=s, leftover=leftover, size=size)
