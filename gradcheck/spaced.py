"""Arrays whose values are placed on purpose: kept apart from each other and from given
points (kinks, a pad value), and integer index arrays with repeated ids.

``spaced_arrays`` first lays the values out on a free line, pairwise at least
``1.25 * gap`` apart (ranks in a random order, a common offset, a jitter of at most gap/8
each, as ``separated_arrays`` does), then cuts each forbidden interval ``[a - M, a + M]``
(``M = 1.125 * margin``, merged where they overlap) into that line: every value at or past
a cut moves up by the interval's width. The map only widens distances, so the gaps hold,
and no value lands within ``margin`` of a point to avoid; the spare eighth of the margin and
of the gap absorbs the rounding of values up to ``span``, which is checked to be far below
both (``span * 2**-52 <= min(gap, margin) / 64``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from gradcheck.strategies import ShapeArg, _check_float, _check_int, _check_shape, _shapes

__all__ = ["REPEATS", "index_arrays", "spaced_arrays"]

REPEATS = ("some", "any", "none")


def _points(avoid: Iterable[Any]) -> tuple[float, ...]:
    if isinstance(avoid, (int, float, np.integer, np.floating)):
        avoid = (avoid,)
    try:
        points = tuple(float(a) for a in avoid)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"avoid must be real numbers, got avoid={avoid!r}") from exc
    if not all(math.isfinite(a) for a in points):
        raise InvalidArgument(f"avoid must be finite, got avoid={avoid!r}")
    return tuple(sorted(points))


def _cuts(points: tuple[float, ...], half: float) -> list[tuple[float, float]]:
    """Forbidden intervals [a - half, a + half], merged, as (position on the free line, width)."""
    merged: list[list[float]] = []
    for a in points:
        if merged and a - half <= merged[-1][1]:
            merged[-1][1] = a + half
        else:
            merged.append([a - half, a + half])
    cuts, removed = [], 0.0
    for lo, hi in merged:
        cuts.append((lo - removed, hi - lo))
        removed += hi - lo
    return cuts


def spaced_arrays(
    shape: ShapeArg,
    *,
    gap: float = 1.0,
    avoid: Iterable[float] = (),
    margin: float | None = None,
    offset_scale: float = 10.0,
) -> st.SearchStrategy[NDArray[np.float64]]:
    """float64 arrays with values pairwise at least ``gap`` apart and at least ``margin``
    (default: ``gap``) from every point in ``avoid`` (e.g. ``avoid=(0.0,)`` for a zero pad
    that max-pool compares against, or a ReLU's kink), around a random offset in
    ``[-offset_scale, offset_scale]``; see the module docstring."""
    gap = _check_float("gap", gap, allow_zero=False)
    margin = gap if margin is None else _check_float("margin", margin, allow_zero=True)
    offset_scale = _check_float("offset_scale", offset_scale, allow_zero=True)
    points = _points(avoid)
    cuts = _cuts(points, 1.125 * margin) if margin > 0 else []
    return _shapes("shape", shape).flatmap(lambda shp: _spaced(shp, gap, margin, cuts,
                                                               offset_scale))


@st.composite
def _spaced(draw: st.DrawFn, shape: tuple[int, ...], gap: float, margin: float,
            cuts: list[tuple[float, float]], offset_scale: float) -> NDArray[np.float64]:
    n = math.prod(shape)
    spacing = 1.25 * gap
    span = offset_scale + spacing * n + sum(w for _, w in cuts) + max(
        (abs(c) for c, _ in cuts), default=0.0)
    tight = min(gap, margin) if cuts else gap
    if not math.isfinite(span) or span * 2.0**-52 > tight / 64:
        raise InvalidArgument(
            f"values up to {span:g} cannot keep gap={gap!r} and margin={margin!r} through "
            f"rounding; use smaller offset_scale, avoid points or arrays")
    ranks = np.array(draw(st.permutations(range(n))), dtype=np.float64)
    jitter = draw(hnp.arrays(np.float64, n, elements=st.floats(0.0, gap / 8)))
    offset = draw(st.floats(-offset_scale, offset_scale)) if offset_scale > 0 else 0.0
    free = offset + (ranks - (n - 1) / 2) * spacing + jitter
    values = free.copy()
    for at, width in cuts:
        values[free >= at] += width
    return values.reshape(shape)


def index_arrays(
    shape: ShapeArg, n: int, *, repeats: str = "some"
) -> st.SearchStrategy[NDArray[np.int64]]:
    """int64 arrays of ids in ``[0, n)``: ``repeats="some"`` puts at least one id twice
    (an extra copy of a drawn id at a drawn position: needs at least 2 elements), ``"any"``
    draws each id freely, ``"none"`` draws distinct ids (needs at most ``n`` elements)."""
    n = _check_int("n", n, 1)
    if repeats not in REPEATS:
        raise InvalidArgument(f"repeats must be one of {REPEATS}, got repeats={repeats!r}")
    if not isinstance(shape, st.SearchStrategy):  # a fixed shape is checked now
        return _indices(_check_shape("shape", shape), n, repeats)
    return _shapes("shape", shape).flatmap(lambda shp: _indices(shp, n, repeats))


def _indices(shape: tuple[int, ...], n: int, repeats: str) -> st.SearchStrategy[Any]:
    size = math.prod(shape)
    if repeats == "some" and size < 2:
        raise InvalidArgument(f"repeats='some' needs at least 2 elements, got shape={shape}")
    if repeats == "none" and size > n:
        raise InvalidArgument(f"repeats='none' needs at most n={n} elements, got shape={shape}")
    if repeats == "any":
        return hnp.arrays(np.int64, shape, elements=st.integers(0, n - 1))
    if repeats == "none":
        return st.permutations(range(n)).map(
            lambda p: np.array(p[:size], dtype=np.int64).reshape(shape))
    ids = st.lists(st.integers(0, n - 1), min_size=size - 1, max_size=size - 1)
    return st.tuples(ids, st.integers(0, size - 2), st.integers(0, size - 1)).map(
        lambda t: _with_repeat(*t, shape))


def _with_repeat(ids: list[int], which: int, where: int, shape: tuple[int, ...]
                 ) -> NDArray[np.int64]:
    out = list(ids)
    out.insert(where, ids[which])
    return np.array(out, dtype=np.int64).reshape(shape)
