"""Seed 000_9b7afb4d4bc9848f, Problem 1: softmax followed by cross-entropy.

Forward, for logits ``y`` of length n >= 2 and a target class ``gt``::

    p_i = exp(y_i) / sum_j exp(y_j)          L = -log p_gt = logsumexp(y) - y_gt

computed stably (log-sum-exp with the max subtracted).

The seed's final formula (from dL/dp_gt times dp_gt/dy_i, after treating the loss as
``-log(1 - p_gt)`` off target)::

    dL/dy_i = p_gt - 1   if i == gt
              p_gt       if i != gt

Transcribed literally, with ``p_gt`` (not ``p_i``) off target. The correct gradient is
``dL/dy_i = p_i - [i == gt]``: the loss does not change form with i, and
``dp_gt/dy_i = -p_gt p_i`` for i != gt (the seed used ``p_gt (1 - p_gt)``, the i == gt case,
for every i). The two agree on the target entry only.

``dy`` is the upstream gradient of the scalar L (a 0-d array); every VJP multiplies by it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradcheck.declare import Derivation
from gradcheck.strategies import class_labels, float_arrays


def _log_softmax(y: np.ndarray) -> np.ndarray:
    shift = y.max(axis=-1, keepdims=True)
    z = y - shift
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def forward(y: np.ndarray, gt: int) -> np.ndarray:
    """L = logsumexp(y) - y_gt = log(sum_j exp(y_j - max y)) - (y_gt - max y); y of shape
    (..., n) gives L of shape (...), in y's float dtype (float64 for integers)."""
    y = np.asarray(y)
    if y.dtype.kind != "f":
        y = y.astype(np.float64)
    z = y - y.max(axis=-1, keepdims=True)
    z_gt = z[..., gt].copy()
    np.exp(z, out=z)  # in place: a second logits-sized array costs more than the exp
    return np.asarray(np.log(z.sum(axis=-1)) - z_gt)


def cases(*, max_n: int = 5, max_logit: float = 50.0) -> st.SearchStrategy[dict[str, Any]]:
    """Logits of length 2..max_n (zeros, tiny and large values up to +-max_logit), a label."""
    return st.integers(2, max_n).flatmap(
        lambda n: st.fixed_dictionaries(
            {"y": float_arrays((n,), max_magnitude=max_logit), "gt": class_labels(n)}
        )
    )


def classify(case: dict[str, Any]) -> str:
    return "n=2" if np.shape(case["y"])[-1] == 2 else "n>2"


softmax_ce = Derivation(
    "softmax_ce",
    forward,
    cases=cases(),
    source="seed 000_9b7afb4d4bc9848f, Problem 1",
    batched=True,
    classify=classify,
)


def dy_as_written(dy: np.ndarray, y: np.ndarray, gt: int) -> np.ndarray:
    """dL/dy_i = p_gt - 1 if i == gt, else p_gt (the seed's case split, literally)."""
    p_gt = np.exp(_log_softmax(y)[gt])
    grad = np.full(y.shape, p_gt)
    grad[gt] = p_gt - 1.0
    return dy * grad


def dy_reference(dy: np.ndarray, y: np.ndarray, gt: int) -> np.ndarray:
    """dL/dy_i = p_i - [i == gt]."""
    grad = np.exp(_log_softmax(y))
    grad[gt] -= 1.0
    return dy * grad


# As written: off target the seed keeps p_gt (its dp_gt/dy_i = p_gt (1 - p_gt) for every i).
softmax_ce.formula("y", dy_as_written, variant="as-written", expect="fail", text="dL/dy_i = p_gt - 1 if i = gt; p_gt if i != gt")
softmax_ce.formula("y", dy_reference, variant="reference", text="dL/dy_i = p_i - [i = gt]")
