"""Diagnosis from the coloured Jacobian: which outputs' contributions a wrong formula keeps.

Coloured differences give, for every output j and its owner i in each colour, the
contribution c_j = g_j dy_j/dx_i of output j to element i's gradient; the numeric
gradient is their sum. A failing formula is compared with sums over subsets of them:

* the outputs with index 0 on some output axes (the sum over those axes is missing);
* at each element, one output only, the last (or first) in row-major order among those
  whose contribution is not zero (contributions of overlapping windows not accumulated).

A statement is made only when the analytic gradient equals that restricted sum at every
element, within the verdict's own tolerances, and the full sum disagrees; nothing is said
otherwise. Costs 2 evaluations per colour, spent on failing checks only.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from gradcheck import compare
from gradcheck.numeric import steps

if TYPE_CHECKING:
    from gradcheck.coloured import ColouredDifferences

MAX_AXES = 4  # subsets of at most this many output axes are tried


def contributions(cd: ColouredDifferences) -> tuple[np.ndarray, np.ndarray] | None:
    """(C, owner): C[c, j] the central-difference contribution of output j to its owner
    owner[c, j] in colour c (-1: none); None when they would not fit a quarter budget."""
    pattern, m = cd.pattern, cd.y0.size
    if 2 * pattern.count * m * 8 > cd.loss.budget // 4:
        return None
    x = cd.x.reshape(-1)
    h = steps(cd.x).reshape(-1)
    xi = x.astype(np.float64)
    xp, xm = (xi + h).astype(cd.x.dtype), (xi - h).astype(cd.x.dtype)
    span = xp.astype(np.float64) - xm
    C = np.zeros((pattern.count, m))
    owner = np.full((pattern.count, m), -1, dtype=np.int64)
    for c in range(pattern.count):
        members = pattern.members(c)
        X = np.broadcast_to(cd.x, (2, *cd.x.shape)).copy()
        flat = X.reshape(2, -1)
        flat[0, members], flat[1, members] = xp[members], xm[members]
        Y = cd.outputs(X)
        own = pattern.owner(c)
        valid = own >= 0
        owner[c] = own
        C[c, valid] = cd.g[valid] * (Y[0, valid] - Y[1, valid]) / span[own[valid]]
    return C, owner


def diagnose(
    cd: ColouredDifferences, a: np.ndarray, atol: np.ndarray, rtol: float, y_shape: tuple[int, ...]
) -> str:
    """A sound sentence on which outputs' contributions ``a`` keeps, or ''."""
    af = a.reshape(-1)
    got = contributions(cd)
    if got is None:
        return ""
    C, owner = got
    valid = owner >= 0

    def restricted(mask: np.ndarray) -> np.ndarray:
        keep = valid & mask
        return np.bincount(owner[keep], weights=C[keep], minlength=af.size)

    def fits(r: np.ndarray) -> bool:
        return bool(np.all(compare.agrees(af, r, atol, rtol)))

    if fits(restricted(np.ones_like(valid))):
        return ""  # the full sum agrees at this step: nothing to explain from here
    index = np.indices(y_shape).reshape(len(y_shape), -1)
    axes = [ax for ax in range(len(y_shape)) if y_shape[ax] > 1]
    for size in range(1, min(len(axes), MAX_AXES) + 1):
        for subset in itertools.combinations(axes, size):
            at_zero = np.all(index[list(subset)] == 0, axis=0)
            if fits(restricted(np.broadcast_to(at_zero, C.shape))):
                names = ", ".join(str(ax) for ax in subset)
                return (f"analytic = the numeric gradient restricted to the outputs with index "
                        f"0 on output axes ({names}): the sum over those output axes is missing")
    nonzero = valid & (np.abs(C) > 0)
    for which, pick in (("last", np.maximum), ("first", np.minimum)):
        j = np.broadcast_to(np.arange(C.shape[1]), C.shape)
        chosen = np.full(af.size, -1 if which == "last" else C.shape[1], dtype=np.int64)
        pick.at(chosen, owner[nonzero], j[nonzero])
        if fits(restricted(nonzero & (j == chosen[np.maximum(owner, 0)]))):
            return (f"analytic = at each element the contribution of one output only (the "
                    f"{which} in row-major order reaching it): contributions of several "
                    f"outputs (overlapping windows) are not accumulated")
    return ""
