"""Scaled dot-product attention, one backward returning every gradient.

Forward, for queries ``q`` (n, d), keys ``k`` (m, d) and values ``v`` (m, e)::

    S = q k^T / sqrt(d)        P = softmax(S) along each row        y = P v      (n, e)

Backward, with the upstream gradient dL/dy (n, e):

* ``y = P v``: dL/dv = P^T dL/dy and dL/dP = dL/dy v^T;
* row-wise softmax, dP_ij/dS_il = P_ij (delta_jl - P_il): dL/dS_il = P_il (dL/dP_il -
  sum_j dL/dP_ij P_ij), the centring term that makes each row of dL/dS sum to zero;
* ``S = q k^T / sqrt(d)``: dL/dq = dL/dS k / sqrt(d) and dL/dk = dL/dS^T q / sqrt(d).

The three gradients come from one backward call, as attention code computes them; each is
reported as its own formula, and one call per case serves all three.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradcheck import Derivation
from gradcheck.strategies import float_arrays


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def forward(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _softmax_rows(q @ k.T / np.sqrt(q.shape[1])) @ v


def backward(dy: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[Any, ...]:
    scale = 1 / np.sqrt(q.shape[1])
    p = _softmax_rows(q @ k.T * scale)
    dp = dy @ v.T
    ds = p * (dp - (dp * p).sum(axis=1, keepdims=True))
    return ds @ k * scale, ds.T @ q * scale, p.T @ dy


def cases(max_side: int = 3, max_magnitude: float = 10.0) -> st.SearchStrategy[dict[str, Any]]:
    """q (n, d), k (m, d), v (m, e) with sides in [1, max_side]."""
    side = st.integers(1, max_side)
    return st.tuples(side, side, side, side).flatmap(lambda t: st.fixed_dictionaries({
        "q": float_arrays((t[0], t[2]), max_magnitude=max_magnitude),
        "k": float_arrays((t[1], t[2]), max_magnitude=max_magnitude),
        "v": float_arrays((t[1], t[3]), max_magnitude=max_magnitude),
    }))


def classify(case: dict[str, Any]) -> str:
    return "one key" if np.shape(case["k"])[0] == 1 else "several keys"


dot_attention = Derivation("dot_attention", forward, cases=cases(), classify=classify,
                           source="the one-backward form: all gradients from one call")
dot_attention.backward(("q", "k", "v"), backward, text="dS = P (dP - rowsum(dP P)); dq = dS k/sqrt(d); dk = dS^T q/sqrt(d); dv = P^T dy")
