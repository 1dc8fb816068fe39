"""Staged verdicts per element and per direction: cheap first, extra work only where needed.

1. D(h) at every element; elements inside the noise-only tolerance agree (tolerance only
   grows from here, so they can never turn out to disagree).
2. The rest get D(2h): the Richardson truncation estimate widens their tolerance, but only
   an element whose truncation estimate is small against its value (resolved) can agree.
3. Still outside, and D(h), D(2h) disagree: D(h/8) and D(h/4), clear of a kink lying
   within the first stencil (again only a resolved value can agree).
4. Still outside: the kink test at h and 2h; an element neither at a kink nor resolved at
   any step is "not resolved" (nonsmooth); otherwise the element disagrees.
Elements that agree but whose one-sided slopes differ by more than KINK_SUSPECT of their
size also get D(2h) and the kink test: a kink is reported, never silently passed.

Directional mode stages each random direction the same way (step t for all directions in
one batched evaluation, 2t and the kink test only where needed, then t/8), and bisects a
disagreeing direction down to blocks checked element by element.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck import compare
from gradcheck.numeric import (
    ELEMENTS,
    Differences,
    Loss,
    differences,
    eps_of,
    random_direction,
    rms_scale,
    shifted,
    slices,
    steps,
)
from gradcheck.result import CaseResult, Element

SMALL = 8  # the retry step is h / SMALL
LEAF = 64  # localisation stops bisecting at blocks this small and checks them element-wise
REPORTED = 5  # worst elements listed in an explanation


@dataclass
class Verdicts:
    numeric: np.ndarray  # the central difference the verdict rests on
    atol: np.ndarray  # its absolute tolerance
    ok: np.ndarray  # agrees
    kink: np.ndarray  # sits at a kink, or is not resolved at any step tried (nonsmooth)
    unresolved: np.ndarray  # of the kink ones: the function changes faster than the step
    overruled: np.ndarray  # agrees on D(h/8) over D(h), on evidence that depends on sigma


def compare_elements(
    loss: Loss, L0: float, a: np.ndarray, index: np.ndarray, sigma: float | np.ndarray,
    rtol: float, diff: Callable[[np.ndarray, np.ndarray], Differences] | None = None,
) -> Verdicts:
    """Verdicts for the flat ``index`` elements of loss.x, whose analytic values are ``a``.
    ``diff(index, h)`` gives the differences (default: of L, one element per evaluation;
    ``gradcheck.coloured`` gives those of each element's restricted loss), and sigma may be
    one noise level or one per element of ``index``."""
    h = steps(loss.x).reshape(-1)[index]
    if diff is None:
        diff = functools.partial(differences, loss, L0)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), index.shape)
    d1 = diff(index, h)
    eps = eps_of(loss.x.dtype)
    noise = np.maximum(sigma, eps * d1.magnitude) / d1.h  # rounding error of D(h)
    num, tol = d1.central.copy(), compare.atol(noise * d1.h, d1.h)
    ok = compare.agrees(a, num, tol, rtol)
    kink = np.zeros(index.size, dtype=bool)
    unresolved = np.zeros(index.size, dtype=bool)
    suspect = ok & compare.kink_suspect(
        d1.curvature_gap, d1.forward_slope, d1.backward_slope, tol
    )
    overruled = np.zeros(index.size, dtype=bool)
    J = np.flatnonzero(~ok | suspect)
    if J.size == 0:
        return Verdicts(num, tol, ok, kink, unresolved, overruled)
    d2 = diff(index[J], 2 * h[J])
    gap2 = np.zeros(index.size)
    gap2[J] = d2.curvature_gap
    trunc = np.abs(d1.central[J] - d2.central) / 3
    tol[J] = np.where(ok[J], tol[J], compare.atol(noise[J] * d1.h[J], d1.h[J], trunc))
    resolved = compare.resolved(trunc, num[J], noise[J], rtol)
    ok[J] |= compare.agrees(a[J], num[J], tol[J], rtol) & resolved
    # A smaller step for those still outside. It may overrule D(h) only where there is
    # evidence that D(h) is off (D(2h) or D(h/8) differ from it beyond their noise, or a
    # kink is suspected); elsewhere its looser noise tolerance would excuse real errors.
    retry = ~ok[J]
    K = J[retry]
    if K.size:
        s1 = diff(index[K], h[K] / SMALL)
        s2 = diff(index[K], 2 * h[K] / SMALL)
        noise_K = np.maximum(sigma[K], eps * s1.magnitude) / s1.h
        trunc_K = np.abs(s1.central - s2.central) / 3
        tol_small = compare.atol(noise_K * s1.h, s1.h, trunc_K)
        moved = np.abs(s1.central - num[K]) > noise_K + noise[K]
        evidence = (trunc[retry] > noise[K]) | suspect[K] | moved
        resolved_K = compare.resolved(trunc_K, s1.central, noise_K, rtol)
        fine = evidence & resolved_K & compare.agrees(a[K], s1.central, tol_small, rtol)
        num[K[fine]], tol[K[fine]], ok[K[fine]] = s1.central[fine], tol_small[fine], True
        overruled[K[fine]] = True
        # D(h) -> D(h/8) should move by about the truncation estimate; far more means the
        # differences are not in their asymptotic regime (the function is not resolved)
        erratic = np.abs(s1.central - num[K]) > 2 * (trunc[retry] + noise_K + noise[K])
        resolved[retry] = np.where(evidence, resolved_K & ~erratic, resolved[retry])
    R = J[~ok[J] | suspect[J]]
    kink[R] = compare.is_kink(
        a[R], d1.curvature_gap[R], gap2[R],
        d1.forward_slope[R], d1.backward_slope[R], tol[R] + rtol * np.abs(num[R]),
    )
    unresolved[J] = ~ok[J] & ~kink[J] & ~resolved
    return Verdicts(num, tol, ok, kink | unresolved, unresolved, overruled)


@dataclass
class DirectionVerdict:
    analytic: float  # <a, x+ - x-> / (x+ - x-)-width: the projection on the actual step
    numeric: float
    atol: float
    ok: bool
    kink: bool
    overruled: bool = False  # agrees on D(t/8) over D(t), on evidence that depends on sigma


def projection(x: np.ndarray, v: np.ndarray, t: float, a: np.ndarray) -> tuple[float, float]:
    """<a, x+ - x-> / 2t on the actual stencil x+- = x +- t v, and a bound on its rounding;
    slice by slice, so a huge input needs no x-sized temporaries."""
    xf, vf, af = x.reshape(-1), v.reshape(-1), a.reshape(-1)
    sums, sizes = [], []
    for i in slices(xf.size):
        xs, vs = xf[i : i + ELEMENTS], vf[i : i + ELEMENTS]
        up = shifted(xs, vs, t, out=np.empty(xs.shape, dtype=x.dtype))
        down = shifted(xs, vs, -t, out=np.empty(xs.shape, dtype=x.dtype))
        terms = af[i : i + ELEMENTS] * (up.astype(np.float64) - down)
        sums.append(np.sum(terms))
        sizes.append(np.sum(np.abs(terms)))
    total, size = float(np.sum(sums)), float(np.sum(sizes))
    return total / (2 * t), eps_of(np.float64) * size / (2 * t)


def _slopes(L0: float, L: np.ndarray, t: float) -> tuple[float, float, float, float]:
    """From L(x + t v), L(x - t v): central difference, curvature gap, one-sided slopes."""
    Lp, Lm = float(L[0]), float(L[1])
    return (Lp - Lm) / (2 * t), abs(Lp - 2 * L0 + Lm) / t, (Lp - L0) / t, (L0 - Lm) / t


def along_directions(
    loss: Loss, L0: float, vs: list[np.ndarray], t: float, a: np.ndarray, sigma: float,
    rtol: float,
) -> list[DirectionVerdict]:
    """Directional derivatives along unit vectors ``vs`` at step t, staged like
    ``compare_elements``: step t for every direction at once; step 2t (the truncation
    estimate and the kink test) for those not clearly inside the noise-only tolerance or
    whose one-sided slopes differ; then t/8 and t/4 for those that still disagree."""
    x, k = loss.x, len(vs)
    L1 = loss.along([v for v in vs for _ in range(2)], [t, -t] * k).reshape(k, 2)
    first = [_slopes(L0, L, t) for L in L1]
    proj = [projection(x, v, t, a) for v in vs]
    tol1 = [float(compare.atol(sigma, np.array(t), dot)) for _, dot in proj]
    ok1 = [bool(compare.agrees(np.array(p[0]), np.array(f[0]), np.array(tl), rtol))
           for p, f, tl in zip(proj, first, tol1, strict=True)]
    more = [i for i in range(k) if not ok1[i] or compare.kink_suspect(
        np.array(first[i][1]), np.array(first[i][2]), np.array(first[i][3]), np.array(tol1[i]))]
    L2 = loss.along([vs[i] for i in more for _ in range(2)], [2 * t, -2 * t] * len(more))
    out = [DirectionVerdict(p[0], f[0], tl, True, False)
           for p, f, tl in zip(proj, first, tol1, strict=True)]
    for i, L in zip(more, L2.reshape(len(more), 2), strict=True):
        (n1, gap1, fwd, bwd), (a1, dot1) = first[i], proj[i]
        n2, gap2, _, _ = _slopes(L0, L, 2 * t)
        tol = float(compare.atol(sigma, np.array(t), abs(n1 - n2) / 3 + dot1))
        kink = bool(compare.is_kink(
            np.array(a1), np.array(gap1), np.array(gap2), np.array(fwd), np.array(bwd),
            np.array(tol + rtol * abs(n1)),
        ))
        resolved = bool(compare.resolved(abs(n1 - n2) / 3, n1, sigma / t + dot1, rtol))
        if ok1[i] or (resolved and compare.agrees(np.array(a1), np.array(n1), np.array(tol),
                                                  rtol)):
            out[i] = DirectionVerdict(a1, n1, tol, True, kink)
            continue
        small = loss.along([vs[i]] * 4, [t / SMALL, -t / SMALL, 2 * t / SMALL, -2 * t / SMALL])
        s1 = _slopes(L0, small[:2], t / SMALL)[0]
        s2 = _slopes(L0, small[2:], 2 * t / SMALL)[0]
        as1, dots = projection(x, vs[i], t / SMALL, a)
        noise_s = sigma / (t / SMALL) + dots
        tol_s = float(compare.atol(sigma, np.array(t / SMALL), abs(s1 - s2) / 3 + dots))
        evidence = kink or abs(n1 - n2) / 3 > sigma / t + dot1 or \
            abs(s1 - n1) > noise_s + sigma / t + dot1  # that D(t) is off (see above)
        erratic = abs(s1 - n1) > 2 * (abs(n1 - n2) / 3 + noise_s + sigma / t + dot1)
        fine = bool(compare.resolved(abs(s1 - s2) / 3, s1, noise_s, rtol))
        if evidence and fine and compare.agrees(np.array(as1), np.array(s1), np.array(tol_s),
                                                rtol):
            out[i] = DirectionVerdict(as1, s1, tol_s, True, False, overruled=True)
        else:  # at a kink, or not resolved at either step: nonsmooth, not a verdict
            blurred = evidence and (not fine or erratic) or not evidence and not resolved
            out[i] = DirectionVerdict(a1, n1, tol, False, kink or blurred)
    return out


def directional(
    result: CaseResult,
    loss: Loss,
    L0: float,
    a: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
    k: int,
) -> bool:
    """Directional mode: k random directions; a disagreeing one is bisected to elements.
    Returns whether a direction agreed only on the sigma-dependent smaller step."""
    x, rtol = loss.x, result.rtol
    t = eps_of(x.dtype) ** (1 / 3) * rms_scale(x)
    # All k directions go through one batched evaluation when they fit in a quarter of the
    # budget; otherwise one at a time. Each is regenerated from its generator state when
    # it has to be localised, so no more than one huge direction is ever held.
    states: list[Mapping[str, Any]] = []
    rows: list[Any] = []
    group = k if k * 8 * x.size <= loss.budget // 4 else 1
    while len(rows) < k:
        vs = []
        for _ in range(min(group, k - len(rows))):
            states.append(rng.bit_generator.state)
            vs.append(random_direction(rng, x))
        rows += along_directions(loss, L0, vs, t, a, sigma, rtol)
        del vs
    ana = np.array([r.analytic for r in rows])
    num = np.array([r.numeric for r in rows])
    tol = np.array([r.atol for r in rows])
    ok = np.array([r.ok for r in rows])
    kink = np.array([r.kink for r in rows])
    rel = compare.rel_error(ana, num, tol, rtol, ok)
    bad = ~ok & ~kink
    result.checked, result.mismatches, result.nonsmooth = k, int(bad.sum()), int(kink.sum())
    result.max_rel_error = float(rel.max())
    result.max_abs_error = float(np.abs(ana - num).max())
    result.worst = [
        Element(None, float(ana[i]), float(num[i]), float(abs(ana[i] - num[i])), float(rel[i]),
                "fail" if bad[i] else "nonsmooth")
        for i in np.argsort(-rel) if bad[i] or kink[i]
    ]
    if bad.any():
        result.status = "fail"
        worst = np.random.Generator(type(rng.bit_generator)())
        worst.bit_generator.state = states[int(np.argmax(np.where(bad, rel, -1.0)))]
        worst_direction = random_direction(worst, x)
        found = _localise(loss, L0, a, sigma, rtol, worst_direction, t)
        result.worst = found + result.worst
        if found:
            result.worst_index = max(found, key=lambda e: e.rel_error).index
            result.max_rel_error = max(result.max_rel_error, *(e.rel_error for e in found))
        overall = compare.diagnose(ana, num, tol, rtol, bad)
        if not overall.startswith(("sign", "constant")):
            overall = f"{int(bad.sum())} of {k} random directions disagree"
        where = ", ".join(str(e.index) for e in found) or "not localised"
        result.diagnosis = f"{overall}; localised to elements {where}"
    elif kink.any():
        result.status = "nonsmooth"
        result.diagnosis = (f"{int(kink.sum())} direction(s) cross a kink or are not resolved "
                            "by finite differences at steps down to t/8")
    else:
        result.status = "pass"
    return any(r.overruled for r in rows)


def _localise(
    loss: Loss, L0: float, a: np.ndarray, sigma: float, rtol: float, v: np.ndarray, t: float
) -> list[Element]:
    """Split a disagreeing direction v into halves (same components, same step) and follow
    the halves that still disagree (or the worse one) down to blocks checked element-wise."""
    x, af, vf = loss.x, a.reshape(-1), v.reshape(-1)
    found: list[Element] = []
    stack = [(0, af.size)]
    while stack and len(found) < REPORTED:
        lo, hi = stack.pop()
        if hi - lo <= LEAF:
            index = np.arange(lo, hi)
            leaf = compare_elements(loss, L0, af[index], index, sigma, rtol)
            rel = compare.rel_error(af[index], leaf.numeric, leaf.atol, rtol, leaf.ok)
            for j in np.flatnonzero(~leaf.ok & ~leaf.kink)[: REPORTED - len(found)]:
                i, n = int(index[j]), float(leaf.numeric[j])
                found.append(Element(
                    tuple(int(q) for q in np.unravel_index(i, x.shape)), float(af[i]),
                    n, float(abs(af[i] - n)), float(rel[j]), "fail",
                ))
            continue
        mid = (lo + hi) // 2
        blocks, parts = [(mid, hi), (lo, mid)], []
        for b0, b1 in blocks:
            part = np.zeros_like(vf)
            part[b0:b1] = vf[b0:b1]
            parts.append(part.reshape(x.shape))
        halves, excess = [], []  # both halves in one batched evaluation
        for block, r in zip(blocks, along_directions(loss, L0, parts, t, a, sigma, rtol),
                            strict=True):
            halves.append((block, not r.ok and not r.kink))
            excess.append(abs(r.analytic - r.numeric) / (r.atol + rtol * abs(r.numeric)))
        del parts
        failing = [block for block, bad in halves if bad]
        stack.extend(failing or [halves[int(np.argmax(excess))][0]])
    return found
