"""An LSTM cell with two outputs, (h, c), and one backward taking (dh, dc).

Forward, for an input ``x`` (n,), state ``h0``, ``c0`` (H,), weights ``W`` (4H, n), ``U``
(4H, H) and ``bias`` (4H,), with sigma the logistic function::

    a = W x + U h0 + bias = [a_i, a_f, a_o, a_g]       (four blocks of H)
    i, f, o = sigma(a_i), sigma(a_f), sigma(a_o)        g = tanh(a_g)
    c = f * c0 + i * g                                  h = o * tanh(c)

Backward, with upstream gradients dh and dc (L = <dh, h> + <dc, c>): c reaches L
directly and through h, so

    dc_total = dc + dh * o * (1 - tanh(c)^2)
    da_i = dc_total * g * i (1 - i)      da_f = dc_total * c0 * f (1 - f)
    da_o = dh * tanh(c) * o (1 - o)      da_g = dc_total * i * (1 - g^2)
    dx = W^T da    dh0 = U^T da    dc0 = dc_total * f
    dW = da x^T    dU = da h0^T    dbias = da

Forgetting the direct ``dc`` term is the classic slip; cases where some output's upstream
gradient is zero (drawn by gradcheck) test each path alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradcheck import Derivation
from gradcheck.strategies import float_arrays


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * a))  # no overflow for large |a|


Array = np.ndarray


def _gates(x: Array, h0: Array, W: Array, U: Array, bias: Array) -> tuple[Array, ...]:
    a_i, a_f, a_o, a_g = np.split(W @ x + U @ h0 + bias, 4)
    return _sigmoid(a_i), _sigmoid(a_f), _sigmoid(a_o), np.tanh(a_g)


def forward(x: Array, h0: Array, c0: Array, W: Array, U: Array, bias: Array
            ) -> tuple[Array, Array]:
    i, f, o, g = _gates(x, h0, W, U, bias)
    c = f * c0 + i * g
    return o * np.tanh(c), c


def backward(dy: tuple[Array, Array], x: Array, h0: Array, c0: Array, W: Array, U: Array,
             bias: Array) -> dict[str, Array]:
    dh, dc = dy
    i, f, o, g = _gates(x, h0, W, U, bias)
    tc = np.tanh(f * c0 + i * g)
    dct = dc + dh * o * (1 - tc**2)
    da = np.concatenate([dct * g * i * (1 - i), dct * c0 * f * (1 - f),
                         dh * tc * o * (1 - o), dct * i * (1 - g**2)])
    return {"x": W.T @ da, "h0": U.T @ da, "c0": dct * f, "W": np.outer(da, x),
            "U": np.outer(da, h0), "bias": da}


def cases(max_side: int = 2, max_magnitude: float = 10.0) -> st.SearchStrategy[dict[str, Any]]:
    """Input size n and state size H in [1, max_side] (2: drawing six arrays is most of the
    cost of a check here; the algebra is the same at any size)."""
    side = st.integers(1, max_side)

    def build(n: int, H: int) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({
            name: float_arrays(shape, max_magnitude=max_magnitude) for name, shape in (
                ("x", (n,)), ("h0", (H,)), ("c0", (H,)), ("W", (4 * H, n)),
                ("U", (4 * H, H)), ("bias", (4 * H,)))})

    return st.tuples(side, side).flatmap(lambda nH: build(*nH))


def classify(case: dict[str, Any]) -> str:
    return "one unit" if np.size(case["h0"]) == 1 else "several units"


lstm_cell = Derivation("lstm_cell", forward, cases=cases(), outputs=("h", "c"),
                       classify=classify, source="the several-outputs form: (h, c)")
# The backward returns all six gradients; the catalogue checks the three of the input and
# the state (drawing the weights is most of a check's cost; tests/test_forms.py checks all).
lstm_cell.backward(("x", "h0", "c0"), backward, text="dc_total = dc + dh o (1 - tanh(c)^2); see the module docstring")
