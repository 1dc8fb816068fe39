"""Declared Jacobian structure: which outputs each input element can reach, and its colouring.

Input elements whose sets of reached outputs never meet can be perturbed together; each
output's change is then attributed to the one element of the group that reaches it
(Curtis, Powell and Reid, 1974). A structure is declared by geometry, never by values
(max pooling and ReLU declare every tap of a window, not the current argmax)::

    windows((3, 3), stride=1, mix=True)   # conv input: windows over the last 2 axes; every
                                          # channel reaches every output channel
    windows((2, 2), stride=2)             # max-pool input: the same channel only
    rows(axis=0, out_axis=0)              # linear W (m, n): W[i, :] reaches y[i] only
    elementwise(), dense()
    sparse(reach)                         # anything else: reach(x_shape, y_shape) -> CSR

``bind(structure, x_shape, y_shape)`` gives the ``Pattern``: a colour per input element
(periodic in the geometry for the helpers, greedy for ``sparse``) and, per colour, the
member reaching each output. Patterns are cached per geometry. A declaration that does
not fit the shapes raises ``DeclarationError``; one that is wrong in a way the shapes do
not show is caught by ``gradcheck.coloured``'s self-verification.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Shape = tuple[int, ...]
OWNER_BYTES = 16 * 2**20  # per pattern: owner tables up to this size are computed once


class DeclarationError(ValueError):
    """A declared structure does not fit the case (or the forward's output)."""


@dataclass(eq=False)
class Pattern:
    """A colouring of the input elements and, per colour, who reaches each output."""

    count: int  # number of colours
    colour: np.ndarray  # (n,) colour of each flat input element
    owners: Callable[[int], np.ndarray]  # c -> (m,) flat input of colour c reaching output j, -1
    label: str

    @functools.cached_property
    def _order(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.colour, kind="stable")
        return order, np.searchsorted(self.colour[order], np.arange(self.count + 1))

    def members(self, c: int) -> np.ndarray:
        order, starts = self._order
        return order[starts[c] : starts[c + 1]]

    def owner(self, c: int) -> np.ndarray:
        """``owners(c)``, kept when all colours' tables together are small (OWNER_BYTES)."""
        memo = self.__dict__.setdefault("_memo", {})
        if c not in memo:
            own = np.ascontiguousarray(self.owners(c))
            if self.count * own.nbytes > OWNER_BYTES:
                return own
            memo[c] = own
        table: np.ndarray = memo[c]
        return table


class Structure:
    """A declaration; ``pattern`` builds its colouring for given input and output shapes."""

    label = "structure"

    def pattern(self, x_shape: Shape, y_shape: Shape) -> Pattern:
        raise NotImplementedError


def bind(structure: Structure, x_shape: Sequence[int], y_shape: Sequence[int]) -> Pattern:
    """The structure's pattern for these shapes (cached per geometry)."""
    if not isinstance(structure, Structure):
        raise DeclarationError(
            f"structure must be a gradcheck.structure.Structure (windows, rows, elementwise, "
            f"dense, sparse), got {type(structure).__name__}"
        )
    xs, ys = tuple(int(s) for s in x_shape), tuple(int(s) for s in y_shape)
    if _size(xs) > CACHED:  # a huge pattern is not kept alive between checks
        return structure.pattern(xs, ys)
    return _bind(structure, xs, ys)


CACHED = 1 << 18  # patterns of inputs up to this many elements are cached (16 of them)


@functools.lru_cache(maxsize=16)
def _bind(structure: Structure, x_shape: Shape, y_shape: Shape) -> Pattern:
    return structure.pattern(x_shape, y_shape)


def _size(shape: Shape) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class Elementwise(Structure):
    label = "elementwise"

    def pattern(self, x_shape: Shape, y_shape: Shape) -> Pattern:
        if x_shape != y_shape:
            raise DeclarationError(f"elementwise: input shape {x_shape} != output {y_shape}")
        n = _size(x_shape)
        everyone = np.arange(n)
        return Pattern(1, np.zeros(n, dtype=np.int64), lambda c: everyone, self.label)


@dataclass(frozen=True)
class Dense(Structure):
    label = "dense"

    def pattern(self, x_shape: Shape, y_shape: Shape) -> Pattern:
        n, m = _size(x_shape), _size(y_shape)
        return Pattern(n, np.arange(n), lambda c: np.full(m, c), self.label)


@dataclass(frozen=True)
class Rows(Structure):
    """Element with index k along ``axis`` reaches the outputs with index k along ``out_axis``."""

    axis: int = 0
    out_axis: int = 0

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"rows(axis={self.axis}, out_axis={self.out_axis})"

    def pattern(self, x_shape: Shape, y_shape: Shape) -> Pattern:
        try:
            size, out = x_shape[self.axis], y_shape[self.out_axis]
        except IndexError:
            raise DeclarationError(f"{self.label}: no such axis in input {x_shape} "
                                   f"or output {y_shape}") from None
        if size != out:
            raise DeclarationError(f"{self.label}: input axis has {size} rows, output axis {out}")
        grid = np.moveaxis(np.arange(_size(x_shape)).reshape(x_shape), self.axis, 0)
        grid = grid.reshape(size, -1)  # grid[k, c]: the element of row k and colour c
        colour = np.empty(grid.size, dtype=np.int64)
        colour[grid] = np.arange(grid.shape[1])[None, :]
        ax = self.out_axis % len(y_shape)
        row_of = np.broadcast_to(
            np.arange(out).reshape([out if i == ax else 1 for i in range(len(y_shape))]), y_shape
        ).reshape(-1)
        return Pattern(grid.shape[1], colour, lambda c: grid[row_of, c], self.label)


def _taps(size: int, out: int, k: int, s: int, p: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis: colour (q // d) % k of each position q, and taps[c, o], the position
    of colour c in window o (-1 if none). Window o's taps q = o*s - p + d*m, m < k, have
    q // d = (o*s - p) // d + m: k consecutive values, so exactly one of each colour."""
    colour = (np.arange(size) // d) % k
    Q = np.arange(out)[:, None] * s - p + d * np.arange(k)[None, :]
    taps = np.full((k, out), -1, dtype=np.int64)
    valid = (Q >= 0) & (Q < size)
    o, m = np.nonzero(valid)
    taps[(Q[o, m] // d) % k, o] = Q[o, m]
    return colour, taps


@dataclass(frozen=True)
class Windows(Structure):
    """Sliding windows over the trailing ``len(kernel)`` axes. Leading axes: with ``mix``,
    every leading index reaches every leading output index (a convolution's channels);
    without, the same leading index only (pooling, depthwise)."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    mix: bool

    @property
    def label(self) -> str:  # type: ignore[override]
        return (f"windows(kernel={self.kernel}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, mix={self.mix})")

    def pattern(self, x_shape: Shape, y_shape: Shape) -> Pattern:
        r = len(self.kernel)
        if len(x_shape) < r or len(y_shape) < r:
            raise DeclarationError(f"{self.label}: input {x_shape} or output {y_shape} has "
                                   f"fewer than {r} axes")
        space, out_space = x_shape[len(x_shape) - r :], y_shape[len(y_shape) - r :]
        lead, out_lead = x_shape[: len(x_shape) - r], y_shape[: len(y_shape) - r]
        expect = tuple(
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(space, self.kernel, self.stride, self.padding,
                                     self.dilation, strict=True)
        )
        if expect != out_space:
            raise DeclarationError(f"{self.label}: input {x_shape} gives output windows "
                                   f"{expect}; forward returns {y_shape}")
        if not self.mix and lead != out_lead:
            raise DeclarationError(f"{self.label}: without mix the leading axes must match: "
                                   f"input {x_shape}, output {y_shape}")
        axes = [_taps(*a) for a in zip(space, out_space, self.kernel, self.stride,
                                       self.padding, self.dilation, strict=True)]
        # spatial colour: mixed radix of the per-axis colours; flat spatial offsets per tap
        strides = [_size(space[i + 1 :]) for i in range(r)]
        spatial = np.zeros(space, dtype=np.int64)
        for i, (col, _) in enumerate(axes):
            shape = [1] * r
            shape[i] = space[i]
            spatial = spatial * self.kernel[i] + col.reshape(shape)
        n_space, n_lead = _size(space), _size(lead)
        per_lead = _size(self.kernel)
        if self.mix:
            colour = (np.arange(n_lead)[:, None] * per_lead + spatial.reshape(1, -1)).reshape(-1)
            count = n_lead * per_lead
        else:
            colour = np.broadcast_to(spatial.reshape(1, -1), (n_lead, n_space)).reshape(-1)
            count = per_lead

        def owners(c: int) -> np.ndarray:
            lead_index, rest = divmod(c, per_lead) if self.mix else (0, c)
            digits = np.unravel_index(rest, self.kernel)
            offset = np.zeros(out_space, dtype=np.int64)
            valid = np.ones(out_space, dtype=bool)
            for i, ((_, taps), digit) in enumerate(zip(axes, digits, strict=True)):
                shape = [1] * r
                shape[i] = out_space[i]
                t = taps[int(digit)].reshape(shape)
                offset = offset + t * strides[i]
                valid = valid & (t >= 0)
            flat = np.where(valid, offset, -1).reshape(1, -1)
            if self.mix:  # the same input channel for every output channel
                own = np.where(flat >= 0, flat + lead_index * n_space, -1)
                return np.broadcast_to(own, (_size(out_lead), flat.size)).reshape(-1)
            base = np.arange(n_lead)[:, None] * n_space
            return np.where(flat >= 0, flat + base, -1).reshape(-1)

        return Pattern(count, colour, owners, self.label)


@dataclass(frozen=True)
class Sparse(Structure):
    """Any pattern: ``reach(x_shape, y_shape)`` returns CSR arrays (indptr, indices) listing
    the flat outputs each flat input reaches; coloured greedily."""

    reach: Callable[[Shape, Shape], tuple[np.ndarray, np.ndarray]]
    label: str = "sparse"  # type: ignore[assignment]

    def pattern(self, x_shape: Shape, y_shape: Shape) -> Pattern:
        indptr, indices = (np.asarray(a, dtype=np.int64) for a in self.reach(x_shape, y_shape))
        n, m = _size(x_shape), _size(y_shape)
        inside = not indices.size or 0 <= indices.min() <= indices.max() < m
        if indptr.shape != (n + 1,) or not inside:
            raise DeclarationError(f"{self.label}: reach must give indptr of length {n + 1} "
                                   f"and output indices in [0, {m})")
        taken: list[np.ndarray] = []  # per colour: owner of each output, -1 if free
        colour = np.empty(n, dtype=np.int64)
        for i in range(n):
            js = indices[indptr[i] : indptr[i + 1]]
            c = next((c for c, own in enumerate(taken) if not (own[js] >= 0).any()), len(taken))
            if c == len(taken):
                taken.append(np.full(m, -1, dtype=np.int64))
            taken[c][js] = i
            colour[i] = c
        return Pattern(len(taken), colour, lambda c: taken[c], self.label)


def _tuple(v: int | Sequence[int], r: int, name: str) -> tuple[int, ...]:
    t = (int(v),) * r if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)
    if len(t) != r:
        raise ValueError(f"windows: {name} must have {r} entries (one per kernel axis), got {v!r}")
    return t


def windows(
    kernel: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    *,
    mix: bool = False,
) -> Windows:
    """Sliding windows over the trailing axes (2 axes for an int kernel)."""
    r = 2 if isinstance(kernel, (int, np.integer)) else len(kernel)
    k, s = _tuple(kernel, r, "kernel"), _tuple(stride, r, "stride")
    p, d = _tuple(padding, r, "padding"), _tuple(dilation, r, "dilation")
    for name, vals, low in (("kernel", k, 1), ("stride", s, 1), ("padding", p, 0),
                            ("dilation", d, 1)):
        if min(vals) < low:
            raise ValueError(f"windows: {name} must be >= {low}, got {name}={vals}")
    return Windows(k, s, p, d, bool(mix))


def rows(axis: int = 0, out_axis: int = 0) -> Rows:
    return Rows(int(axis), int(out_axis))


def elementwise() -> Elementwise:
    return Elementwise()


def dense() -> Dense:
    return Dense()


def sparse(reach: Callable[[Shape, Shape], tuple[np.ndarray, np.ndarray]],
           label: str = "sparse") -> Sparse:
    return Sparse(reach, label)


def resolve(structure: Any, case: dict[str, Any]) -> Structure | None:
    """A structure, or a function of the case returning one (or None)."""
    if structure is None or isinstance(structure, Structure):
        return structure
    if callable(structure):
        out = structure(case)
        if out is not None and not isinstance(out, Structure):
            raise DeclarationError(f"structure(case) returned {type(out).__name__}; expected "
                                   "a gradcheck.structure.Structure or None")
        return out
    raise DeclarationError(f"structure must be a Structure or a function of the case, got "
                           f"{type(structure).__name__}")
