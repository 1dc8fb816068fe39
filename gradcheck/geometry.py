"""Sliding-window geometry as real convolution and pooling APIs take it: 1-D, 2-D or 3-D,
with padding, dilation, and exact tiling or a remainder, valid by construction.

Per axis, with kernel ``k``, dilation ``d``, stride ``s``, padding ``p`` on both sides,
``o`` windows and a remainder ``r``::

    span   = d * (k - 1) + 1                   # the window's extent, taps d apart
    padded = size + 2 * p == (o - 1) * s + span + r,    0 <= r < s

so ``o == (padded - span) // s + 1`` as every framework computes it; ``r == 0`` is exact
tiling (the last window ends on the padded input's last element). Each axis is in one
*regime*: ``overlap`` (s < span), ``tile`` (s == span) or ``gap`` (s > span).

:func:`windows` enumerates the (kernel, dilation, stride) triples of each requested regime
within the bounds, draws one (small first), then the window count and the remainder, then
the padding among the values that keep the input non-empty and, unless
``empty_windows=True``, every window holding at least one tap on the input itself (what
max-pool needs: a window entirely in the padding has no maximum). The largest valid
padding is found by counting up from 0 (validity only shrinks as padding grows), so no
draw is ever rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from gradcheck.strategies import REGIMES, _check_int, _check_regimes, axis_regime

__all__ = ["TILINGS", "Window", "windows"]

TILINGS = ("any", "exact", "remainder")

Ints = tuple[int, ...]


@dataclass(frozen=True)
class Window:
    """A sliding window over ``len(size)`` axes; every field is one int per axis."""

    size: Ints  # the input's own extent, before padding
    kernel: Ints
    stride: Ints
    dilation: Ints
    padding: Ints  # on both sides
    out: Ints
    leftover: Ints  # the remainder r, 0 <= r < stride; 0 for exact tiling

    def __post_init__(self) -> None:
        fields = (self.size, self.kernel, self.stride, self.dilation, self.padding, self.out,
                  self.leftover)
        if len({len(f) for f in fields}) != 1:
            raise ValueError(f"a Window needs one value per axis in every field: {self!r}")
        for a in range(self.ndim):
            ok = (self.size[a] >= 1 and self.kernel[a] >= 1 and self.dilation[a] >= 1
                  and self.out[a] >= 1 and self.padding[a] >= 0
                  and 0 <= self.leftover[a] < self.stride[a]
                  and self.padded[a] == (self.out[a] - 1) * self.stride[a] + self.span[a]
                  + self.leftover[a])
            if not ok:
                raise ValueError(f"inconsistent window geometry on axis {a}: {self!r}")

    @property
    def ndim(self) -> int:
        return len(self.size)

    @property
    def span(self) -> Ints:
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation, strict=True))

    @property
    def padded(self) -> Ints:
        return tuple(n + 2 * p for n, p in zip(self.size, self.padding, strict=True))

    @property
    def pad_width(self) -> tuple[tuple[int, int], ...]:
        """For ``numpy.pad`` over the window's axes."""
        return tuple((p, p) for p in self.padding)

    @property
    def axis_regimes(self) -> tuple[str, ...]:
        return tuple(axis_regime(w, s) for w, s in zip(self.span, self.stride, strict=True))

    @property
    def regime(self) -> str:
        """One name if every axis agrees, else ``"mixed:<a>/<b>/..."``."""
        r = self.axis_regimes
        return r[0] if len(set(r)) == 1 else "mixed:" + "/".join(r)

    def starts(self, axis: int) -> list[int]:
        """Where each window starts on ``axis``, in unpadded coordinates (may be < 0)."""
        return [i * self.stride[axis] - self.padding[axis] for i in range(self.out[axis])]


def _triples(regime: str, max_kernel: int, max_dilation: int, max_stride: int,
             min_stride: int) -> list[tuple[int, int, int]]:
    """Every (kernel, dilation, stride) of ``regime`` within the bounds, smallest first."""
    return [(k, d, s) for k in range(1, max_kernel + 1) for d in range(1, max_dilation + 1)
            if k > 1 or d == 1  # a 1-tap window has no dilation
            for s in range(min_stride, max_stride + 1)
            if axis_regime(d * (k - 1) + 1, s) == regime]


def _touches(k: int, d: int, s: int, o: int, size: int, p: int) -> bool:
    """Every window has a tap on the input itself (0 <= position < size)."""
    return all(any(0 <= i * s - p + j * d < size for j in range(k)) for i in range(o))


def _max_padding(axes: list[tuple[int, int, int, int, int]], bound: int, empty_windows: bool,
                 half: bool) -> int:
    """The largest padding <= bound valid on every axis (k, d, s, o, r); 0 always is."""
    p = 0
    while p < bound:
        q = p + 1
        for k, d, s, o, r in axes:
            span = d * (k - 1) + 1
            size = (o - 1) * s + span + r - 2 * q
            if size < 1 or (half and 2 * q > span) or (
                    not empty_windows and not _touches(k, d, s, o, size, q)):
                return p
        p = q
    return p


def windows(
    ndim: int = 2,
    *,
    max_out: int = 3,
    max_kernel: int = 3,
    max_stride: int = 3,
    max_dilation: int = 1,
    max_padding: int = 0,
    tiling: str = "any",
    regimes: tuple[str, ...] = REGIMES,
    uniform: bool = False,
    empty_windows: bool = False,
    half_window_padding: bool = False,
) -> st.SearchStrategy[Window]:
    """Window geometries over ``ndim`` axes (see the module docstring).

    ``tiling``: ``"exact"`` (remainder 0), ``"remainder"`` (0 < r < stride, so stride >= 2)
    or ``"any"``. ``uniform=True`` shares kernel, dilation, stride and padding across axes
    (APIs taking one int for each); the sizes may still differ. ``half_window_padding``
    adds PyTorch's pooling rule ``2 * padding <= span``.
    """
    ndim = _check_int("ndim", ndim, 1)
    max_out = _check_int("max_out", max_out, 1)
    max_kernel = _check_int("max_kernel", max_kernel, 1)
    max_stride = _check_int("max_stride", max_stride, 1)
    max_dilation = _check_int("max_dilation", max_dilation, 1)
    max_padding = _check_int("max_padding", max_padding, 0)
    if tiling not in TILINGS:
        raise InvalidArgument(f"tiling must be one of {TILINGS}, got tiling={tiling!r}")
    min_stride = 2 if tiling == "remainder" else 1
    if max_stride < min_stride:
        raise InvalidArgument(
            f"tiling='remainder' needs a stride >= 2, got max_stride={max_stride}")
    chosen = _check_regimes(regimes, max_kernel, max_stride)
    table = {r: _triples(r, max_kernel, max_dilation, max_stride, min_stride) for r in chosen}
    empty = [r for r, t in table.items() if not t]
    if empty:
        raise InvalidArgument(
            f"regime(s) {empty} cannot be drawn with max_kernel={max_kernel}, "
            f"max_dilation={max_dilation}, max_stride={max_stride}, tiling={tiling!r}")
    return _windows(ndim, max_out, max_padding, tiling, table, uniform, empty_windows,
                    bool(half_window_padding))


@st.composite
def _windows(draw: st.DrawFn, ndim: int, max_out: int, max_padding: int, tiling: str,
             table: dict[str, list[tuple[int, int, int]]], uniform: bool, empty_windows: bool,
             half: bool) -> Window:
    def triple() -> tuple[int, int, int]:
        return draw(st.sampled_from(table[draw(st.sampled_from(list(table)))]))

    shared = triple()
    kds = [shared if uniform or a == 0 else triple() for a in range(ndim)]
    axes = []
    for k, d, s in kds:
        o = draw(st.integers(1, max_out))
        r = {"exact": 0, "remainder": None, "any": None}[tiling]
        if r is None:
            r = draw(st.integers(1 if tiling == "remainder" else 0, s - 1))
        axes.append((k, d, s, o, r))
    if uniform:
        p_max = _max_padding(axes, max_padding, empty_windows, half)
        pads = [draw(st.integers(0, p_max))] * ndim
    else:
        pads = [draw(st.integers(0, _max_padding([ax], max_padding, empty_windows, half)))
                for ax in axes]
    size = tuple((o - 1) * s + d * (k - 1) + 1 + r - 2 * p
                 for (k, d, s, o, r), p in zip(axes, pads, strict=True))
    return Window(size=size, kernel=tuple(a[0] for a in axes), stride=tuple(a[2] for a in axes),
                  dilation=tuple(a[1] for a in axes), padding=tuple(pads),
                  out=tuple(a[3] for a in axes), leftover=tuple(a[4] for a in axes))
