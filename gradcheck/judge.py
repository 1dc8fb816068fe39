"""The staged judgement, written once for every kind of item: an element of x, a random
direction, or any other set of perturbations whose central differences can be taken at a
chosen multiple of a base step (a ``Probe``).

1. D(h) for every item; an item inside the noise-only tolerance agrees (tolerance only
   grows from here, so it can never turn out to disagree).
2. The rest get D(2h): the Richardson truncation estimate widens their tolerance, but only
   an item whose truncation estimate is small against its value (resolved) can agree. Items
   that agree but whose one-sided slopes differ by more than KINK_SUSPECT of their size get
   D(2h) too, and the kink test: a kink is reported, never silently passed.
3. Still outside: refinement. Steps h/3.7 (with 2h/3.7), h/3.7^2 (with 2h/3.7^2), ... are tried
   for the items that neither agree nor settle (starting from a quarter of the item's own
   scale, |x_i| for an element with 0 < |x_i| < 1, where the steps left the domain or that
   scale is beyond the ladder's reach: a pole or domain edge at 0 is reached at once;
   elsewhere the noise may need the larger steps). Evidence that D(h) is off: D(h) and D(2h)
   differ beyond their noise, a kink, a step that left the domain (the forward is
   non-finite there), or a finer difference moved beyond the noise. At each level an item
   * agrees, when that level is resolved, informative (its tolerance below half its value,
     or no wider than the noise-only tolerance at h) and inside its tolerance;
   * disagrees, when the level is resolved, informative, not at a kink, and it settles:
     the previous level was resolved too and agrees with it within their error estimates
     (two resolved levels, not one: a step near a multiple of a period fools one);
   * else goes one level finer, until the step would no longer be a representable change
     of x (ULPS units in its last place), or rounding alone (SAFETY sigma/h) would exceed
     the values in play (the noise limit), or MAX_LEVELS. There it is at a kink if the
     one-sided slopes still keep their gap with the analytic value between; it disagrees
     on D(h) if no step moved the difference beyond its noise (flat at every scale, the
     analytic value outside every tolerance); else it is "not resolved".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradcheck import compare

SMALL = 3.7  # each level divides the step by SMALL: no integer, so that two levels' steps
# are never both near multiples of a period when one is (D(s) and D(2s) can be; see below)
MAX_LEVELS = 34  # h / 3.7**34 ~ 1e-19 h: past the noise limit of any step from eps^(1/3)
ULPS = 4  # the finest step is this many units in the last place of x: a representable change
JUMP = 8  # levels kept in reserve below an item's own scale when it starts there
INFORMATIVE = 0.5  # a refined level decides only where its tolerance is below half its value


@dataclass
class Stencil:
    """Central and one-sided differences of L for some items at one step multiple."""

    h: np.ndarray  # actual half-width of each stencil
    magnitude: np.ndarray  # max(|L+|, |L-|): eps times it bounds their own rounding
    central: np.ndarray  # (L+ - L-) / 2h
    curvature_gap: np.ndarray  # |L+ - 2 L0 + L-| / h = |forward - backward one-sided slope|
    forward_slope: np.ndarray
    backward_slope: np.ndarray
    analytic: np.ndarray  # the analytic value on this stencil (a projection, for directions)
    slack: np.ndarray  # bound on the rounding of ``analytic`` (0 for elements)
    finest: np.ndarray  # the smallest step that is still a representable change of x
    scale: np.ndarray  # the item's own scale, as a multiple of h (inf where none is known)

    @property
    def finite(self) -> np.ndarray:
        """L was finite at x + h and x - h (else the step left the forward's domain)."""
        return np.isfinite(self.central) & np.isfinite(self.curvature_gap)


Probe = Callable[[np.ndarray, np.ndarray], Stencil]  # (items, multiples of h) -> Stencil


@dataclass
class Verdicts:
    numeric: np.ndarray  # the central difference the verdict rests on
    atol: np.ndarray  # its absolute tolerance
    ok: np.ndarray  # agrees
    kink: np.ndarray  # sits at a kink, or is not resolved at any step tried (nonsmooth)
    unresolved: np.ndarray  # of the kink ones: no step tried resolves the derivative
    outside: np.ndarray  # of the unresolved ones: every step tried left the domain
    overruled: np.ndarray  # agrees on a smaller step, on evidence that depends on sigma
    analytic: np.ndarray  # the analytic value on the stencil the verdict rests on


def rounding(d: Stencil, sigma: float, eps: float) -> np.ndarray:
    """The rounding error of D: sigma_L, or eps * max|L(x +- h)| if larger, over h, plus the
    rounding of the analytic projection."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.fmax(sigma, eps * d.magnitude) / d.h + d.slack


def judge(probe: Probe, n: int, sigma: float, eps: float, rtol: float) -> Verdicts:
    """Verdicts for items 0..n-1 at noise level sigma (see the module docstring)."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return _judge(probe, n, sigma, eps, rtol)


def _judge(probe: Probe, n: int, sigma: float, eps: float, rtol: float) -> Verdicts:
    d1 = probe(np.arange(n), np.ones(n))
    a = d1.analytic.copy()
    noise = rounding(d1, sigma, eps)
    num, tol = d1.central.copy(), compare.SAFETY * noise
    base_tol = tol.copy()  # the noise-only tolerance at h
    ok = compare.agrees(a, num, tol, rtol)
    false = np.zeros(n, dtype=bool)
    kink, unresolved, outside, overruled = false.copy(), false.copy(), false.copy(), false.copy()
    suspect = ok & compare.kink_suspect(d1.curvature_gap, d1.forward_slope, d1.backward_slope,
                                        tol)
    J = np.flatnonzero(~ok | suspect)
    if J.size == 0:
        return Verdicts(num, tol, ok, kink, unresolved, outside, overruled, a)
    d2 = probe(J, np.full(J.size, 2.0))
    trunc = np.abs(d1.central[J] - d2.central) / 3
    tol[J] = np.where(ok[J], tol[J], compare.atol(noise[J] * d1.h[J], d1.h[J], trunc))
    finite = d1.finite[J] & d2.finite
    resolved = compare.resolved(trunc, num[J], noise[J], rtol) & finite
    ok[J] |= compare.agrees(a[J], num[J], tol[J], rtol) & resolved
    kink[J] = compare.is_kink(a[J], d1.curvature_gap[J], d2.curvature_gap, d1.forward_slope[J],
                              d1.backward_slope[J], tol[J] + rtol * np.abs(num[J]))
    kink[J] &= ~ok[J] | suspect[J]
    # Refinement, for the items still outside. A smaller step may let an item agree only
    # where there is evidence that the coarser difference is off: elsewhere its looser
    # noise tolerance would excuse real errors.
    left = ~ok[J]
    K = J[left]
    evidence = (trunc[left] > noise[K]) | kink[K] | ~finite[left]
    prev, prev_err, prev_noise = num[K], trunc[left] + noise[K], noise[K]
    prev_decides = resolved[left]
    # The first refined step is h/SMALL; each level divides it by SMALL. An item whose
    # steps left the domain, or whose own scale (|x_i| for 0 < |x_i| < 1: a pole or edge at
    # 0 is that far) lies beyond the ladder's reach, starts at a quarter of it instead.
    own = d1.scale[K] / SMALL
    jump = ~finite[left] | (own < SMALL ** (JUMP - MAX_LEVELS))
    first = np.where(jump, np.minimum(1.0 / SMALL, own), 1.0 / SMALL)
    for level in range(1, MAX_LEVELS + 1):
        if K.size == 0:
            break
        multiple = first * SMALL ** (1 - level)
        s1, s2 = probe(K, multiple), probe(K, 2 * multiple)
        noise_k = rounding(s1, sigma, eps)
        trunc_k = np.abs(s1.central - s2.central) / 3
        tol_k = compare.atol(noise_k * s1.h, s1.h, trunc_k)
        good = s1.finite & s2.finite
        gap = np.abs(s1.central - prev)
        evidence |= ~(gap <= noise_k + prev_noise)  # moved beyond the noise of both
        level_kink = good & compare.is_kink(
            s1.analytic, s1.curvature_gap, s2.curvature_gap, s1.forward_slope,
            s1.backward_slope, tol_k + rtol * np.abs(s1.central))
        decides = good & compare.resolved(trunc_k, s1.central, noise_k, rtol) & (
            tol_k <= np.fmax(INFORMATIVE * np.abs(s1.central), base_tol[K]))
        agree = evidence & decides & compare.agrees(s1.analytic, s1.central, tol_k, rtol)
        settled = decides & prev_decides & ~level_kink & ~agree & (
            gap <= 2 * (prev_err + noise_k))
        take = agree | settled
        num[K[take]], tol[K[take]], a[K[take]] = s1.central[take], tol_k[take], \
            s1.analytic[take]
        ok[K[agree]], overruled[K[agree]] = True, True
        kink[K[take]] = False
        limit = (s1.h / SMALL < s1.finest) | ~(
            compare.SAFETY * SMALL * noise_k <= np.fmax(np.abs(s1.analytic), np.abs(s1.central)))
        stop = ~take & (limit | (level == MAX_LEVELS))
        # Flat within the noise at every step down to the limit, with the analytic value
        # outside every tolerance: D(h) stands (the gradient is not what the formula says).
        flat = stop & ~evidence & good & ~level_kink
        kink[K[stop]] = level_kink[stop]
        unresolved[K[stop & ~flat]] = ~level_kink[stop & ~flat]
        outside[K[stop]] = ~good[stop] & ~level_kink[stop]
        keep = ~take & ~stop
        K, evidence, first = K[keep], evidence[keep], first[keep]
        prev = np.where(good, s1.central, prev)[keep]
        prev_err = np.where(good, trunc_k + noise_k, prev_err)[keep]
        prev_noise = np.where(good, noise_k, prev_noise)[keep]
        prev_decides = decides[keep]
    return Verdicts(num, tol, ok, kink | unresolved, unresolved, outside, overruled, a)
