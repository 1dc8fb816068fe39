"""A dense layer object as small numpy libraries write it: the ``Layer`` form.

Forward, for a batch ``x`` of shape (B, n), ``weight`` (m, n) and ``bias`` (m,)::

    y = x weight^T + bias              y_bi = sum_j x_bj weight_ij + bias_i

Backward, with the upstream gradient dL/dy of shape (B, m), by the chain rule::

    dL/dx_bj      = sum_i dL/dy_bi weight_ij      dL/dx = dL/dy weight
    dL/dweight_ij = sum_b dL/dy_bi x_bj           dL/dweight = dL/dy^T x
    dL/dbias_i    = sum_b dL/dy_bi                (the bias is broadcast over the batch)

The object keeps its parameters in ``layer.params``, caches ``x`` in ``forward`` and fills
``layer.grads`` in ``backward``, which returns dL/dx. gradcheck builds it from the case's
sizes, sets the parameters through their paths, runs ``forward``, then the backward on the
same object; ``reusable=True`` (the forward leaves nothing that changes the next one)
lets every perturbed evaluation reuse one object per case.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradcheck import Layer
from gradcheck.strategies import float_arrays


class Dense:
    def __init__(self, n_in: int, n_out: int) -> None:
        rng = np.random.default_rng(0)
        self.params = {"weight": rng.standard_normal((n_out, n_in)) / np.sqrt(n_in),
                       "bias": np.zeros(n_out)}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads["weight"] = dy.T @ self.x
        self.grads["bias"] = dy.sum(axis=0)
        return dy @ self.params["weight"]


def cases(max_side: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """A batch x (B, n) and the sizes n_in = n, n_out = m; weight and bias drawn too."""
    side = st.integers(1, max_side)
    return st.tuples(side, side, side).flatmap(lambda bnm: st.fixed_dictionaries({
        "x": float_arrays(bnm[:2]), "n_in": st.just(bnm[1]), "n_out": st.just(bnm[2]),
        "weight": float_arrays((bnm[2], bnm[1])), "bias": float_arrays((bnm[2],)),
    }))


def classify(case: dict[str, Any]) -> str:
    return "one example" if np.shape(case["x"])[0] == 1 else "batch"


dense_layer = Layer("dense_layer", Dense, cases=cases(), inputs="x", reusable=True,
                    params={"weight": "params.weight", "bias": "params.bias"},
                    classify=classify, source="the Layer form: an object with parameters")
dense_layer.backward(("x", "weight", "bias"), lambda layer, dy: (layer.backward(dy), layer.grads["weight"], layer.grads["bias"]), text="dL/dx = dL/dy W; dL/dW = dL/dy^T x; dL/dbias = sum_b dL/dy")
