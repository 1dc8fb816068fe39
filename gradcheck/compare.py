"""The one comparison rule, the kink test, and the diagnosis of a mismatch.

Rule (printed in every report): an element agrees when

    |a - n| <= atol_i + rtol * |n|,  atol_i = SAFETY * (sigma_L / h_i + trunc_i),  rtol = sqrt(eps)

with sigma_L, h_i and trunc_i from the noise model in ``gradcheck.numeric``. The relative
error shown is |a - n| / max(|a|, |n|, floor), the floor atol_i / rtol for an agreeing
element (a gradient too small to resolve is not called "100 % off") and atol_i for a
disagreeing one (a wrong tiny gradient shows how wrong it is).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradcheck.numeric import eps_of

SAFETY = 8.0  # error estimates are ~1 standard deviation; 8 keeps a 1e6-element check quiet
KINK_SUSPECT = 0.1  # one-sided slopes differing by 10 % at step h: test for a kink
KINK_RATIO = 0.75  # smooth: |L+ - 2L0 + L-|/h halves with h; a kink keeps it (ratio ~1)

RULE = (
    "element agrees when |a - n| <= atol_i + rtol*|n|, "
    f"atol_i = {SAFETY:g}*(sigma_L/h_i + trunc_i), "
    "rtol = sqrt(eps); sigma_L = eps*magnitudes in L (a pass on D(h) or D(2h) there "
    "stands; otherwise the measured noise of L, ECnoise, lowest over three spacings), or "
    "eps*max|L(x+-h)| if larger; "
    "h_i = eps^(1/3)*max(1,|x_i|), trunc_i = |D(h)-D(2h)|/3; elements still outside are "
    "refined (h/3.7^k, down to the noise limit or 4 ulps of x): they agree on a resolved "
    "smaller step where D(h) is shown off, disagree where two successive resolved steps "
    "agree with each other, else are not resolved (nonsmooth); "
    "rel error = |a-n|/max(|a|,|n|,atol_i/rtol if it agrees else atol_i)"
)


def rtol_of(dtype: Any) -> float:
    return math.sqrt(eps_of(dtype))


def atol(
    sigma: float | np.ndarray, h: np.ndarray, trunc: np.ndarray | float = 0.0
) -> np.ndarray:
    return SAFETY * (sigma / h + trunc)


def resolved(
    trunc: np.ndarray | float, n: np.ndarray | float, noise: np.ndarray | float, rtol: float
) -> np.ndarray:
    """The difference resolves the derivative: its truncation estimate is small against its
    value (sqrt(rtol) relative) or below the rounding noise. Otherwise a tolerance widened
    by the truncation estimate would accept anything."""
    return np.asarray(trunc <= np.sqrt(rtol) * np.abs(n) + noise)


def agrees(a: np.ndarray, n: np.ndarray, atol_: np.ndarray, rtol: float) -> np.ndarray:
    return np.abs(a - n) <= atol_ + rtol * np.abs(n)


def rel_error(
    a: np.ndarray, n: np.ndarray, atol_: np.ndarray, rtol: float, ok: np.ndarray
) -> np.ndarray:
    """|a - n| / max(|a|, |n|, floor). An agreeing element's floor is atol/rtol, so a
    gradient too small to resolve does not show a large error; a disagreeing element's
    floor is atol, so a wrong tiny gradient shows how wrong it is, not a token 1e-7."""
    floor = np.maximum(np.where(ok, atol_ / rtol, atol_), np.finfo(np.float64).tiny)
    return np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)


def kink_suspect(
    gap: np.ndarray, fwd: np.ndarray, bwd: np.ndarray, tol: np.ndarray
) -> np.ndarray:
    """Agreeing elements worth a kink test: one-sided slopes differ by a visible fraction."""
    return gap > tol + KINK_SUSPECT * np.maximum(np.abs(fwd), np.abs(bwd))


def is_kink(
    a: np.ndarray,
    gap_h: np.ndarray,
    gap_2h: np.ndarray,
    lo_slope: np.ndarray,
    hi_slope: np.ndarray,
    tol: np.ndarray,
) -> np.ndarray:
    """Elements whose one-sided slopes disagree in a way no smooth function explains.

    Smooth: the gap between forward and backward slopes shrinks linearly with the step.
    At a kink it does not. A kink excuses the analytic value only if it lies between the
    one-sided slopes (a subgradient); otherwise the formula is wrong there regardless.
    """
    keeps_gap = gap_h >= KINK_RATIO * gap_2h
    significant = gap_h > tol
    lo, hi = np.minimum(lo_slope, hi_slope), np.maximum(lo_slope, hi_slope)
    between = (a >= lo - tol) & (a <= hi + tol)
    return keeps_gap & significant & between


def _fits(a: np.ndarray, b: np.ndarray, tol: np.ndarray, rtol: float) -> bool:
    return bool(np.all(agrees(a, b, tol, rtol)))


def _slice_pattern(mask: np.ndarray, what: str) -> str | None:
    """'all in row 2' style description when the marked elements share a coordinate."""
    where = np.argwhere(mask)
    if mask.ndim == 0 or where.size == 0:
        return None
    shared = [
        f"index {where[0, ax]} of axis {ax}"
        for ax in range(mask.ndim)
        if mask.shape[ax] > 1 and np.all(where[:, ax] == where[0, ax])
    ]
    if shared:
        return f"the {what} elements all lie at " + " and ".join(shared)
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    if np.all(mask[box]) and mask[box].size < mask.size:
        span = ", ".join(f"{s.start}:{s.stop}" for s in box)
        return f"the {what} elements are exactly the block [{span}]"
    return None


def diagnose(
    a: np.ndarray, n: np.ndarray, tol: np.ndarray, rtol: float, bad: np.ndarray
) -> str:
    """One sentence on what is wrong: sign, scale, transposition, or which elements."""
    if not bad.any():
        return ""
    if _fits(a, -n, tol, rtol):
        return "sign flipped: analytic = -numeric"
    if np.all(np.abs(a) <= tol) and np.any(np.abs(n) > tol):
        return "analytic is zero everywhere, the gradient is not"
    nn = float(np.sum(n * n))
    if nn > 0 and np.count_nonzero(np.abs(n) > tol) >= 2:  # one element fits any scale
        c = float(np.sum(a * n)) / nn
        if abs(c - 1) > 1e-3 and _fits(a, c * n, tol, rtol):
            return f"constant scale: analytic = {c:.6g} * numeric"
    if a.ndim >= 2 and a.shape[-1] == a.shape[-2] and a.shape[-1] > 1:
        nt = np.swapaxes(n, -1, -2)
        if _fits(a, nt, np.swapaxes(tol, -1, -2), rtol):
            return "transposed: analytic = numeric with its last two axes swapped"
    k, size = int(bad.sum()), bad.size
    parts = [f"wrong on {k} of {size} elements ({100 * k / size:.0f} %)"]
    if k == 1 and np.all(np.abs(n[bad]) > tol[bad]):  # one element fits any scale: name it
        parts.append(f"there analytic = {float(a[bad][0] / n[bad][0]):.6g} × numeric")
    n_zero = np.abs(n) <= tol
    a_zero = np.abs(a) <= tol
    if np.all(n_zero[bad]):
        parts.append("the gradient is zero at every wrong element: analytic has spurious terms")
    elif np.all(a_zero[bad]):
        parts.append("analytic is zero at every wrong element: contributions are missing")
    pattern = _slice_pattern(bad, "wrong") or (
        _slice_pattern(~bad, "right") if k < size else None
    )
    if pattern:
        parts.append(pattern)
    return "; ".join(parts)
