"""Verdicts per element and per random direction, both through ``gradcheck.judge``.

An element's stencil is x +- s e_i; a direction's is x +- s v, its analytic value the
projection of the analytic gradient on the stencil as rounded. One rule for both (before
issue 17's item 4 the direction path tested for a smaller step's evidence with the full
kink test and the element path with the kink suspicion only, and only the element path
floored the rounding by eps * max|L+-|; both now do both). What differs, and why:
* a direction's analytic value is a sum over every element, rounded: its bound (``slack``)
  is added to the noise; an element's is a number the formula returned (slack 0);
* a direction's finest step is ULPS * eps * the rms scale of x (it moves every element at
  once), an element's ULPS units in its own last place;
* a direction has no own scale (a pole or edge at 0 of one element does not tell where
  the direction's edge is), so it never starts refinement below t/SMALL.
Directional mode bisects a disagreeing direction down to blocks checked element by
element.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck import compare
from gradcheck.judge import ULPS, Probe, Stencil, Verdicts, judge
from gradcheck.numeric import (
    ELEMENTS,
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

LEAF = 64  # localisation stops bisecting at blocks this small and checks them element-wise
REPORTED = 5  # worst elements listed in an explanation


def element_probe(loss: Loss, L0: float, a: np.ndarray, index: np.ndarray) -> Probe:
    """Differences at the flat ``index`` elements of loss.x, whose analytic values are ``a``;
    the base step h_i = eps^(1/3) max(1, |x_i|), the finest ULPS units in x_i's last place."""
    h = steps(loss.x).reshape(-1)[index]
    x = loss.x.reshape(-1)[index]
    finest = ULPS * np.spacing(np.abs(x)).astype(np.float64)
    size = np.abs(x.astype(np.float64))
    own = np.where((size > 0) & (size < 1), size / h, np.inf)  # |x_i| in units of h_i

    def probe(items: np.ndarray, multiple: np.ndarray) -> Stencil:
        d = differences(loss, L0, index[items], h[items] * multiple)
        return Stencil(d.h, d.magnitude, d.central, d.curvature_gap, d.forward_slope,
                       d.backward_slope, a[items], np.zeros(items.size), finest[items],
                       own[items])

    return probe


def compare_elements(
    loss: Loss, L0: float, a: np.ndarray, index: np.ndarray, sigma: float, rtol: float
) -> Verdicts:
    """Verdicts for the flat ``index`` elements of loss.x, whose analytic values are ``a``."""
    probe = element_probe(loss, L0, a, index)
    return judge(probe, index.size, sigma, eps_of(loss.x.dtype), rtol)


@dataclass
class DirectionVerdict:
    analytic: float  # <a, x+ - x-> / (x+ - x-)-width: the projection on the actual step
    numeric: float
    atol: float
    ok: bool
    kink: bool  # at a kink, or not resolved (nonsmooth)
    overruled: bool = False  # agrees on a smaller step, on evidence that depends on sigma
    outside: bool = False  # not resolved: every step tried left the forward's domain


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


def direction_probe(
    loss: Loss, L0: float, vs: list[np.ndarray], t: float, a: np.ndarray
) -> Probe:
    """Differences along the unit vectors ``vs`` at base step t, all in one batched call."""
    x = loss.x
    finest = ULPS * eps_of(x.dtype) * rms_scale(x)

    def probe(items: np.ndarray, multiple: np.ndarray) -> Stencil:
        s = t * multiple
        rows = loss.along([vs[i] for i in items for _ in range(2)],
                          [u for si in s for u in (si, -si)])
        Lp, Lm = rows.reshape(items.size, 2).T
        proj = np.array([projection(x, vs[i], float(si), a) for i, si in zip(items, s,
                         strict=True)]).reshape(items.size, 2)
        with np.errstate(invalid="ignore", over="ignore"):
            return Stencil(
                s, np.maximum(np.abs(Lp), np.abs(Lm)), (Lp - Lm) / (2 * s),
                np.abs(Lp - 2 * L0 + Lm) / s, (Lp - L0) / s, (L0 - Lm) / s, proj[:, 0],
                proj[:, 1], np.full(items.size, finest), np.full(items.size, np.inf),
            )

    return probe


def along_directions(
    loss: Loss, L0: float, vs: list[np.ndarray], t: float, a: np.ndarray, sigma: float,
    rtol: float,
) -> list[DirectionVerdict]:
    """Verdicts on the directional derivatives along unit vectors ``vs`` at step t."""
    probe = direction_probe(loss, L0, vs, t, a)
    v = judge(probe, len(vs), sigma, eps_of(loss.x.dtype), rtol)
    return [DirectionVerdict(float(v.analytic[i]), float(v.numeric[i]), float(v.atol[i]),
                             bool(v.ok[i]), bool(v.kink[i]), bool(v.overruled[i]),
                             bool(v.outside[i])) for i in range(len(vs))]


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
    with np.errstate(invalid="ignore"):  # NaN where every step left the domain: not resolved
        rel = np.nan_to_num(compare.rel_error(ana, num, tol, rtol, ok), nan=0.0, posinf=0.0)
    bad = ~ok & ~kink
    result.checked, result.mismatches, result.nonsmooth = k, int(bad.sum()), int(kink.sum())
    result.max_rel_error = float(rel.max())
    result.max_abs_error = float(np.nan_to_num(np.abs(ana - num), nan=0.0).max())
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
                            "by finite differences at any step down to the noise limit")
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
            gap = abs(r.analytic - r.numeric) / (r.atol + rtol * abs(r.numeric))
            excess.append(gap if math.isfinite(gap) else 0.0)
        del parts
        failing = [block for block, bad in halves if bad]
        stack.extend(failing or [halves[int(np.argmax(excess))][0]])
    return found
