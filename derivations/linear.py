"""Seed 000_9b7afb4d4bc9848f, Problem 2: a linear layer.

Forward, with ``W`` of shape (m, n), ``x`` of shape (n,) and ``b`` of shape (m,)::

    y = W x + b                      y_i = sum_j W_ij x_j + b_i

The seed's final formulas, by the chain rule::

    dL/dW = dL/dy . x        dL/db = dL/dy . 1        dL/dx = dL/dy . W

Readings used for the as-written variants: ``dL/dy . x`` is the outer product
``dy x^T`` (the only product of an m-vector and an n-vector with W's shape);
``dL/dy . 1`` is ``dy``; ``dL/dy . W`` is the row vector ``dy`` times ``W``, i.e. ``dy @ W``
(the seed's ``dL/dy . dy/dx`` with dL/dy a row). The correct gradients are
``dW_ij = dy_i x_j``, ``db = dy`` and ``dx = W^T dy`` -- under these readings the seed may well
be right; the tool decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradcheck.declare import Derivation
from gradcheck.strategies import float_arrays
from gradcheck.structure import dense, elementwise, rows


def forward(W: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = W x + b; a leading batch axis on any one argument is carried to y.

    W times x as a column: with a batch axis, numpy's matmul makes one BLAS call of the
    same shape per batch row, so each output is rounded the same way with or without a
    batch axis (one product over all rows at once, or an einsum, need not be), and no
    W-sized temporary is made.
    """
    return np.matmul(W, x[..., None])[..., 0] + b


def cases(*, max_side: int = 4, max_magnitude: float = 1e3) -> st.SearchStrategy[dict[str, Any]]:
    """W (m, n), x (n,), b (m,) with 1 <= m, n <= max_side and awkward float values."""

    def build(m: int, n: int) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                "W": float_arrays((m, n), max_magnitude=max_magnitude),
                "x": float_arrays((n,), max_magnitude=max_magnitude),
                "b": float_arrays((m,), max_magnitude=max_magnitude),
            }
        )

    sides = st.integers(1, max_side)
    return st.tuples(sides, sides).flatmap(lambda mn: build(*mn))


def classify(case: dict[str, Any]) -> str:
    m, n = np.shape(case["W"])[-2:]
    return "square" if m == n else "wide" if m < n else "tall"


linear = Derivation(
    "linear",
    forward,
    cases=cases(),
    source="seed 000_9b7afb4d4bc9848f, Problem 2",
    batched=True,
    classify=classify,
    # W[i, :] reaches y[i] only (n colours, one per column); b[i] reaches y[i]; x all of y
    structure={"W": rows(0, 0), "b": elementwise(), "x": dense()},
)

# As written: "dL/dy . x" read as the outer product dy x^T (the product with W's shape).
linear.formula("W", lambda dy, W, x, b: np.outer(dy, x), variant="as-written", text="dL/dW = dL/dy . x")
linear.formula("W", lambda dy, W, x, b: np.outer(dy, x), variant="reference", text="dL/dW_ij = dL/dy_i x_j")
# As written: "dL/dy . 1" is dy itself.
linear.formula("b", lambda dy, W, x, b: dy.copy(), variant="as-written", text="dL/db = dL/dy . 1")
linear.formula("b", lambda dy, W, x, b: dy.copy(), variant="reference", text="dL/db = dL/dy")
# As written: "dL/dy . W" read as the row vector dy times W, i.e. dy @ W.
linear.formula("x", lambda dy, W, x, b: dy @ W, variant="as-written", text="dL/dx = dL/dy . W")
linear.formula("x", lambda dy, W, x, b: W.T @ dy, variant="reference", text="dL/dx = W^T dL/dy")
