"""Staged verdicts per element and per direction: cheap first, extra work only where needed.

1. D(h) at every element; elements inside the noise-only tolerance agree (tolerance only
   grows from here, so they can never turn out to disagree).
2. The rest get D(2h): the Richardson truncation estimate widens their tolerance.
3. Still outside: D(h/8) and D(h/4), clear of a kink lying within the first stencil.
4. Still outside: the kink test at h and 2h; otherwise the element disagrees.
Elements that agree but whose one-sided slopes differ by more than KINK_SUSPECT of their
size also get D(2h) and the kink test: a kink is reported, never silently passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcheck import compare
from gradcheck.numeric import Loss, differences, eps_of, steps

SMALL = 8  # the retry step is h / SMALL


@dataclass
class Verdicts:
    numeric: np.ndarray  # the central difference the verdict rests on
    atol: np.ndarray  # its absolute tolerance
    ok: np.ndarray  # agrees
    kink: np.ndarray  # sits at a kink (nonsmooth), agreeing or not


def compare_elements(
    loss: Loss, L0: float, a: np.ndarray, index: np.ndarray, sigma: float, rtol: float
) -> Verdicts:
    """Verdicts for the flat ``index`` elements of loss.x, whose analytic values are ``a``."""
    h = steps(loss.x).reshape(-1)[index]
    d1 = differences(loss, L0, index, h)
    num, tol = d1.central.copy(), compare.atol(sigma, d1.h)
    ok = compare.agrees(a, num, tol, rtol)
    kink = np.zeros(index.size, dtype=bool)
    suspect = ok & compare.kink_suspect(
        d1.curvature_gap, d1.forward_slope, d1.backward_slope, tol
    )
    J = np.flatnonzero(~ok | suspect)
    if J.size == 0:
        return Verdicts(num, tol, ok, kink)
    d2 = differences(loss, L0, index[J], 2 * h[J])
    gap2 = np.zeros(index.size)
    gap2[J] = d2.curvature_gap
    trunc = np.abs(d1.central[J] - d2.central) / 3
    tol[J] = np.where(ok[J], tol[J], compare.atol(sigma, d1.h[J], trunc))
    ok[J] = compare.agrees(a[J], num[J], tol[J], rtol)
    K = J[~ok[J]]
    if K.size:
        s1 = differences(loss, L0, index[K], h[K] / SMALL)
        s2 = differences(loss, L0, index[K], 2 * h[K] / SMALL)
        tol_small = compare.atol(sigma, s1.h, np.abs(s1.central - s2.central) / 3)
        fine = compare.agrees(a[K], s1.central, tol_small, rtol)
        num[K[fine]], tol[K[fine]], ok[K[fine]] = s1.central[fine], tol_small[fine], True
    R = J[~ok[J] | suspect[J]]
    kink[R] = compare.is_kink(
        a[R], d1.curvature_gap[R], gap2[R],
        d1.forward_slope[R], d1.backward_slope[R], tol[R] + rtol * np.abs(num[R]),
    )
    return Verdicts(num, tol, ok, kink)


@dataclass
class DirectionVerdict:
    analytic: float  # <a, x+ - x-> / (x+ - x-)-width: the projection on the actual step
    numeric: float
    atol: float
    ok: bool
    kink: bool


def _stencil(
    loss: Loss, L0: float, v: np.ndarray, t: float, a: np.ndarray
) -> tuple[float, float, float, float, float, float]:
    """Along v at step t: numeric, analytic, gap, forward and backward slopes, dot rounding."""
    x = loss.x
    xp = (x + t * v).astype(x.dtype)
    xm = (x - t * v).astype(x.dtype)
    Lp, Lm = loss.rows(np.stack([xp, xm]))
    step = xp.astype(np.float64) - xm
    dot_terms = a * step
    analytic = float(np.sum(dot_terms)) / (2 * t)
    dot_error = eps_of(np.float64) * float(np.sum(np.abs(dot_terms))) / (2 * t)
    return (
        (Lp - Lm) / (2 * t), analytic, abs(Lp - 2 * L0 + Lm) / t,
        (Lp - L0) / t, (L0 - Lm) / t, dot_error,
    )


def along_direction(
    loss: Loss, L0: float, v: np.ndarray, t: float, a: np.ndarray, sigma: float, rtol: float
) -> DirectionVerdict:
    """The directional derivative along unit v at step t, staged like ``compare_elements``."""
    n1, a1, gap1, fwd, bwd, dot1 = _stencil(loss, L0, v, t, a)
    n2, _, gap2, _, _, _ = _stencil(loss, L0, v, 2 * t, a)
    tol = float(compare.atol(sigma, np.array(t), abs(n1 - n2) / 3 + dot1))
    kink = bool(compare.is_kink(
        np.array(a1), np.array(gap1), np.array(gap2), np.array(fwd), np.array(bwd),
        np.array(tol + rtol * abs(n1)),
    ))
    if compare.agrees(np.array(a1), np.array(n1), np.array(tol), rtol):
        return DirectionVerdict(a1, n1, tol, True, kink)
    s1, as1, _, _, _, dots = _stencil(loss, L0, v, t / SMALL, a)
    s2, _, _, _, _, _ = _stencil(loss, L0, v, 2 * t / SMALL, a)
    tol_s = float(compare.atol(sigma, np.array(t / SMALL), abs(s1 - s2) / 3 + dots))
    if compare.agrees(np.array(as1), np.array(s1), np.array(tol_s), rtol):
        return DirectionVerdict(as1, s1, tol_s, True, False)
    return DirectionVerdict(a1, n1, tol, False, kink)
