"""Seed 000_9b7afb4d4bc9848f, Problem 4: 2-D max pooling, no padding.

Forward, with ``x`` of shape (C, H, Wd), an M x N window and one stride ``s``::

    y(c,i,j) = max_{m < M} max_{n < N} x(c, i*s+m, j*s+n)

with y of shape (C, Ho, Wo), Ho = (H - M) // s + 1, Wo = (Wd - N) // s + 1.

The seed's final formula::

    dL/dx(t,m,n) = dL/dy(c,i,j)   if max_{m,n} x(c, i*s+m, j*s+n) = x(t,m,n)
                   0              otherwise

Reading for the as-written variant: no sum over the windows that share an element is
written, so it is an *assignment*: for each window (c,i,j) its argmax element is set to
dy(c,i,j). Where several windows share the same argmax element, one value survives -- the
last window in row-major (i, j) order, as a loop that assigns would leave it (made
deterministic explicitly, not left to numpy's fancy-assignment order).

The correct gradient *adds* dy(c,i,j) into the argmax element of every window (a
scatter-add). The two differ exactly when some element is the argmax of two or more
windows (for generic dy), which needs overlapping windows (stride < window side on some
axis); with tiling or gaps every element is in at most one window and they agree.
Cases draw x with values pairwise separated by >= 1, so there are no ties and a
finite-difference step never changes a window's winner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from gradcheck.declare import Derivation
from gradcheck.strategies import REGIMES, separated_arrays, window_geometry, window_regime
from gradcheck.structure import windows


def _windows(x: np.ndarray, M: int, N: int, s: int) -> np.ndarray:
    """x (..., H, Wd) -> its strided windows (..., Ho, Wo, M, N) (a view)."""
    return sliding_window_view(x, (M, N), axis=(-2, -1))[..., ::s, ::s, :, :]


def forward(x: np.ndarray, M: int, N: int, s: int) -> np.ndarray:
    """y (C, Ho, Wo); a leading batch axis on x is carried to y.

    The running maximum over the M*N strided taps (max is exact, so the order is free):
    far cheaper per batched row than reducing a window view.
    """
    Ho, Wo = (x.shape[-2] - M) // s + 1, (x.shape[-1] - N) // s + 1
    y = x[..., 0 : (Ho - 1) * s + 1 : s, 0 : (Wo - 1) * s + 1 : s].copy()
    for m in range(M):
        for n in range(N):
            np.maximum(y, x[..., m : m + (Ho - 1) * s + 1 : s, n : n + (Wo - 1) * s + 1 : s],
                       out=y)
    return y


def argmax_targets(x: np.ndarray, M: int, N: int, s: int) -> np.ndarray:
    """Flat index into x (C, H, Wd) of each window's max, shape (C, Ho, Wo)."""
    C, H, Wd = x.shape
    win = _windows(x, M, N, s)
    _, Ho, Wo = win.shape[:3]
    flat = win.reshape(C, Ho, Wo, M * N).argmax(axis=-1)
    rows = np.arange(Ho)[:, None] * s + flat // N
    cols = np.arange(Wo)[None, :] * s + flat % N
    return (np.arange(C)[:, None, None] * H + rows) * Wd + cols


def cases(
    *,
    max_out: int = 3,
    max_kernel: int = 3,
    max_stride: int = 3,
    max_channels: int = 3,
    regimes: tuple[str, ...] = REGIMES,
) -> st.SearchStrategy[dict[str, Any]]:
    """x with pairwise-separated values (no ties), window M x N and stride s."""
    geometry = window_geometry(
        max_out=max_out, max_kernel=max_kernel, max_stride=max_stride, regimes=regimes
    )

    def build(args: tuple[Any, int]) -> st.SearchStrategy[dict[str, Any]]:
        g, C = args
        M, N = g.kernel
        return separated_arrays((C, *g.size)).map(lambda x: {"x": x, "M": M, "N": N, "s": g.stride})

    return st.tuples(geometry, st.integers(1, max_channels)).flatmap(build)


def classify(case: dict[str, Any]) -> str:
    return window_regime((case["M"], case["N"]), case["s"])


maxpool2d = Derivation(
    "maxpool2d",
    forward,
    cases=cases(),
    source="seed 000_9b7afb4d4bc9848f, Problem 4",
    batched=True,
    classify=classify,
    # every tap of a window, not the current argmax (structure never depends on values)
    structure={"x": lambda case: windows((case["M"], case["N"]), case["s"])},
)


def dx_as_written(dy: np.ndarray, x: np.ndarray, M: int, N: int, s: int) -> np.ndarray:
    """dx[argmax of window (c,i,j)] = dy(c,i,j), assigned; the last window in (i,j) order wins."""
    targets = argmax_targets(x, M, N, s).ravel()[::-1]
    values = np.asarray(dy, dtype=np.float64).ravel()[::-1]
    # First occurrence in the reversed order = last window in row-major order.
    kept, first = np.unique(targets, return_index=True)
    dx = np.zeros(x.size)
    dx[kept] = values[first]
    return dx.reshape(x.shape)


def dx_reference(dy: np.ndarray, x: np.ndarray, M: int, N: int, s: int) -> np.ndarray:
    """dx[p] = sum of dy(c,i,j) over the windows whose argmax is p (scatter-add)."""
    dx = np.zeros(x.size)
    np.add.at(dx, argmax_targets(x, M, N, s).ravel(), np.asarray(dy, dtype=np.float64).ravel())
    return dx.reshape(x.shape)


# As written: an assignment per window, no sum over windows sharing an element (last wins).
maxpool2d.formula("x", dx_as_written, variant="as-written", expect="fail", text="dL/dx(t,m,n) = dL/dy(c,i,j) if max_{m,n} x(c, i*s+m, j*s+n) = x(t,m,n), 0 otherwise")
maxpool2d.formula("x", dx_reference, variant="reference", text="dL/dx(c,p,q) = sum_{(i,j): argmax of window (c,i,j) = (p,q)} dL/dy(c,i,j)")
