"""Seed 000_9b7afb4d4bc9848f, Problem 3: a 2-D convolution (cross-correlation), no padding.

Forward, with ``x`` of shape (T, H, Wd), filters ``W`` of shape (K, T, M, N), bias ``b`` of
shape (K,) and one stride ``s`` for both axes::

    y(k,i,j) = sum_t sum_m sum_n x(t, i*s+m, j*s+n) W_k(t,m,n) + b_k

with y of shape (K, Ho, Wo), Ho = (H - M) // s + 1, Wo = (Wd - N) // s + 1.

The seed's final formulas::

    dL/dW_k(t,m,n) = dL/dy(k,i,j) * x(t, i*s+m, j*s+n)
    dL/db_k        = dL/dy(k,i,j) * 1 = dL/dy
    dL/dx(t,m,n)   = dL/dy(k,i,j) * W_k(t,m,n)   if (i = 0, j = 0),   0 otherwise

Reading rule for the as-written variants: the seed writes no sum over the output
positions (i, j), nor over k in dL/dx, so an index on the right that is neither on the
left nor under a written sum is taken at its first value, 0. Hence::

    as-written dW_k(t,m,n) = dy(k,0,0) x(t,m,n)
    as-written db_k        = dy(k,0,0)
    as-written dx(t,p,q)   = dy(0,0,0) W_0(t,p,q) for p < M, q < N (the window of output
                             (0,0), the seed's "(i = 0, j = 0)" case), 0 elsewhere

The correct gradients sum over every output position (and every filter for x)::

    dW_k(t,m,n) = sum_ij dy(k,i,j) x(t, i*s+m, j*s+n)
    db_k        = sum_ij dy(k,i,j)
    dx(t,p,q)   = sum_k sum_{(i,j,m,n): i*s+m = p, j*s+n = q} dy(k,i,j) W_k(t,m,n)

the last a scatter-add of dy * W over all windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from gradcheck.declare import Derivation
from gradcheck.strategies import REGIMES, float_arrays, window_geometry, window_regime
from gradcheck.structure import rows, windows

Array = np.ndarray


def _windows(x: np.ndarray, M: int, N: int, s: int) -> np.ndarray:
    """x (..., H, Wd) -> its strided windows (..., Ho, Wo, M, N) (a view)."""
    return sliding_window_view(x, (M, N), axis=(-2, -1))[..., ::s, ::s, :, :]


def _columns(x: Array, M: int, N: int, s: int) -> Array:
    """im2col: x (..., T, H, Wd) -> its windows as columns (..., T*M*N, Ho*Wo) (a copy)."""
    windows = np.moveaxis(_windows(x, M, N, s), (-2, -1), (-4, -3))  # (..., T, M, N, Ho, Wo)
    T, _, _, Ho, Wo = windows.shape[-5:]
    return np.ascontiguousarray(windows).reshape(*x.shape[:-3], T * M * N, Ho * Wo)


def forward(x: Array, W: Array, b: Array, s: int) -> Array:
    """y (K, Ho, Wo); a leading batch axis on any one of x, W, b is carried to y.

    One matrix product of the filters (K, T*M*N) with the windows as columns. With a batch
    axis, numpy's matmul makes one BLAS call of that same shape per batch row, so each
    output is rounded the same way with or without a batch axis (one big product over all
    rows, or an einsum, need not be).
    """
    K, T, M, N = W.shape[-4:]
    Ho, Wo = (x.shape[-2] - M) // s + 1, (x.shape[-1] - N) // s + 1
    y = np.matmul(W.reshape(*W.shape[:-3], T * M * N), _columns(x, M, N, s))
    return y.reshape(*y.shape[:-1], Ho, Wo) + b[..., :, None, None]


def cases(
    *,
    max_out: int = 3,
    max_kernel: int = 3,
    max_stride: int = 3,
    max_channels: int = 3,
    max_magnitude: float = 10.0,
    regimes: tuple[str, ...] = REGIMES,
) -> st.SearchStrategy[dict[str, Any]]:
    """x, W, b of moderate awkward values and a stride, over all window regimes."""
    geometry = window_geometry(
        max_out=max_out, max_kernel=max_kernel, max_stride=max_stride, regimes=regimes
    )
    channels = st.integers(1, max_channels)

    def build(args: tuple[Any, int, int]) -> st.SearchStrategy[dict[str, Any]]:
        g, T, K = args
        return st.tuples(
            float_arrays((T, *g.size), max_magnitude=max_magnitude),
            float_arrays((K, T, *g.kernel), max_magnitude=max_magnitude),
            float_arrays((K,), max_magnitude=max_magnitude),
        ).map(lambda xWb: {"x": xWb[0], "W": xWb[1], "b": xWb[2], "s": g.stride})

    return st.tuples(geometry, channels, channels).flatmap(build)


def classify(case: dict[str, Any]) -> str:
    M, N = np.shape(case["W"])[-2:]
    return window_regime((M, N), case["s"])


conv2d = Derivation(
    "conv2d",
    forward,
    cases=cases(),
    source="seed 000_9b7afb4d4bc9848f, Problem 3",
    batched=True,
    classify=classify,
    # x: every input channel reaches every output channel through its windows; W and b:
    # filter k reaches output channel k only
    structure={"x": lambda case: windows(np.shape(case["W"])[-2:], case["s"], mix=True),
               "W": rows(0, 0), "b": rows(0, 0)},
)


def dW_as_written(dy: Array, x: Array, W: Array, b: Array, s: int) -> Array:
    """dW_k(t,m,n) = dy(k,0,0) x(t,m,n): the seed's free (i, j) taken at 0."""
    M, N = W.shape[-2:]
    return dy[:, 0, 0, None, None, None] * x[None, :, :M, :N]


def dW_reference(dy: Array, x: Array, W: Array, b: Array, s: int) -> Array:
    """dW_k(t,m,n) = sum_ij dy(k,i,j) x(t, i*s+m, j*s+n)."""
    K = dy.shape[0]
    return (dy.reshape(K, -1) @ _columns(x, *W.shape[-2:], s).T).reshape(W.shape)


def dx_as_written(dy: Array, x: Array, W: Array, b: Array, s: int) -> Array:
    """dx(t,p,q) = dy(0,0,0) W_0(t,p,q) for p < M, q < N (window (0,0)), else 0."""
    M, N = W.shape[-2:]
    dx = np.zeros_like(x, dtype=np.float64)
    dx[:, :M, :N] = dy[0, 0, 0] * W[0]
    return dx


def dx_reference(dy: Array, x: Array, W: Array, b: Array, s: int) -> Array:
    """dx(t,p,q) = sum_k sum_{i*s+m=p, j*s+n=q} dy(k,i,j) W_k(t,m,n) (scatter-add)."""
    K, T, M, N = W.shape
    _, Ho, Wo = dy.shape
    # the window gradients sum_k dy(k,i,j) W_k(t,m,n), then each tap added back in place
    dwin = (W.reshape(K, -1).T @ dy.reshape(K, -1)).reshape(T, M, N, Ho, Wo)
    dx = np.zeros_like(x, dtype=np.float64)
    for m in range(M):
        for n in range(N):
            rows = slice(m, m + (Ho - 1) * s + 1, s)
            cols = slice(n, n + (Wo - 1) * s + 1, s)
            dx[:, rows, cols] += dwin[:, m, n]
    return dx


# As written: no sum over (i, j) is written, so (i, j) = (0, 0).
conv2d.formula("W", dW_as_written, variant="as-written", expect="fail", text="dL/dW_k(t,m,n) = dL/dy(k,i,j) * x(t, i*s+m, j*s+n)")
conv2d.formula("W", dW_reference, variant="reference", text="dL/dW_k(t,m,n) = sum_ij dL/dy(k,i,j) * x(t, i*s+m, j*s+n)")
# As written: "dL/dy(k,i,j) * 1 = dL/dy" with no sum over (i, j), so (i, j) = (0, 0).
conv2d.formula("b", lambda dy, x, W, b, s: dy[:, 0, 0].copy(), variant="as-written", expect="fail", text="dL/db_k = dL/dy(k,i,j) * 1 = dL/dy")
conv2d.formula("b", lambda dy, x, W, b, s: dy.sum(axis=(1, 2)), variant="reference", text="dL/db_k = sum_ij dL/dy(k,i,j)")
# As written: only the "(i = 0, j = 0)" window, with k not summed, so k = 0.
conv2d.formula("x", dx_as_written, variant="as-written", expect="fail", text="dL/dx(t,m,n) = dL/dy(k,i,j) * W_k(t,m,n) if (i = 0, j = 0), 0 otherwise")
conv2d.formula("x", dx_reference, variant="reference", text="dL/dx(t,p,q) = sum_k sum_{i*s+m=p, j*s+n=q} dL/dy(k,i,j) * W_k(t,m,n)")
