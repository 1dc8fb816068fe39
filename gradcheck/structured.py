"""Structured exhaustive mode's verdict, and the self-verification of a declaration.

``structured_verdict`` judges every element from coloured differences
(``gradcheck.coloured``) with the one judge (``gradcheck.judge``), at the outputs' noise
floor first and at their measured noise when that is not a pass. A wrong declaration never
produces a verdict:
(a) in every coloured evaluation, an output that no perturbed member reaches must not move
    beyond SAFETY times its noise;
(b) the coloured gradient along a random direction must match the directional difference
    of the true L (an independent check of misattribution);
(c) elements the judge finds wrong are re-measured one by one without the structure; a
    coloured value outside that measurement's error bars means misattribution.
Any of them -> a note, and the caller checks without the structure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from gradcheck import compare, jacobian
from gradcheck.coloured import ColouredDifferences
from gradcheck.judge import Verdicts, judge
from gradcheck.noise import estimate_noise
from gradcheck.numeric import (
    Loss,
    differences,
    eps_of,
    random_direction,
    rms_scale,
    steps,
)
from gradcheck.result import CaseResult
from gradcheck.structure import Pattern
from gradcheck.verdict import element_probe

RECHECK = 32  # failing elements re-measured without the structure (c)
VERIFY_DIRECTIONS = 1  # (b): one continuous random direction sees a misattribution almost
# surely; each costs 4 evaluations, 8 of the 18 a max-pool check took with two


def directional_agreement(
    loss: Loss, numeric: np.ndarray, atol: np.ndarray, sigma_L: float,
    rng: np.random.Generator, k: int, smooth: np.ndarray,
) -> tuple[bool, float, float, float]:
    """(b): <coloured numeric gradient, u> against the central difference of the true L
    along k random directions u, at steps t and 2t (Richardson truncation estimate).
    Tolerance: SAFETY * (sigma_L / t + truncation) for the true difference, plus
    sum |u_i| atol_i for the coloured one. u is zero on the elements not ``smooth`` (at a
    kink or not resolved: there neither difference means anything); none smooth, nothing
    to compare. Returns (ok, projected, true, tolerance) of the worst direction."""
    x = loss.x
    t = eps_of(x.dtype) ** (1 / 3) * rms_scale(x)
    worst = (True, 0.0, 0.0, 0.0)
    for _ in range(k if smooth.any() else 0):
        u = random_direction(rng, x)
        u.reshape(-1)[~smooth] = 0.0
        L = loss.along([u, u, u, u], [t, -t, 2 * t, -2 * t])
        up = (x.astype(np.float64) + t * u).astype(x.dtype).astype(np.float64)
        down = (x.astype(np.float64) - t * u).astype(x.dtype).astype(np.float64)
        step = (up - down).reshape(-1)
        n1 = float(L[0] - L[1]) / (2 * t)
        n2 = float(L[2] - L[3]) / (4 * t)
        projected = float(np.dot(numeric, step)) / (2 * t)
        tol = compare.SAFETY * (sigma_L / t + abs(n1 - n2) / 3) \
            + float(np.dot(np.abs(step), atol)) / (2 * t) + compare.rtol_of(x.dtype) * abs(n1)
        ok = abs(projected - n1) <= tol
        if not ok or worst[0]:
            worst = (ok, projected, n1, tol)
        if not ok:
            break
    return worst


def plain_recheck(
    loss: Loss, L0: float, index: np.ndarray, numeric: np.ndarray, atol: np.ndarray,
    sigma_L: float, h: np.ndarray,
) -> int | None:
    """(c): D(h) and D(2h) of the true L at ``index`` (one element at a time); returns the
    first element whose coloured value lies outside their error bars plus its own."""
    d1 = differences(loss, L0, index, h)
    d2 = differences(loss, L0, index, 2 * h)
    eps = eps_of(loss.x.dtype)
    noise = np.maximum(sigma_L, eps * d1.magnitude) / d1.h
    tol = compare.atol(noise * d1.h, d1.h, np.abs(d1.central - d2.central) / 3) + atol
    off = np.abs(d1.central - numeric) > tol + compare.rtol_of(loss.x.dtype) * np.abs(d1.central)
    bad = np.flatnonzero(off)
    return int(index[bad[0]]) if bad.size else None


def structured_verdict(
    template: CaseResult, loss: Loss, L0: float, y: np.ndarray, a: np.ndarray,
    pattern: Pattern, inputs_max: float, floor: float, rng: np.random.Generator,
    fill: Callable[[CaseResult, np.ndarray, Verdicts, tuple[int, ...]], None],
) -> CaseResult | str:
    """The element verdicts from coloured differences, or, when self-verification shows
    the declaration wrong, a note saying how (the caller then checks without it)."""
    cd = ColouredDifferences(loss, y, pattern, inputs_max)
    af, index = a.reshape(-1), np.arange(a.size)

    def verdicts() -> tuple[CaseResult, Verdicts]:
        result = dataclasses.replace(template, notes=list(template.notes))
        probe = element_probe(loss, L0, af, index, diff=cd, noise=cd.sigma(index))
        v = judge(probe, af.size, 0.0, eps_of(loss.x.dtype), result.rtol)
        fill(result, af, v, a.shape)
        return result, v

    result, v = verdicts()
    if result.status != "pass" or v.overruled.any() or cd.moved:
        cd.measure_noise(rng)  # judged again at the measured output noise (never narrower)
        result, v = verdicts()
    moved = cd.unexplained()
    where = "the declared structure"
    if moved is not None:
        out = tuple(int(i) for i in np.unravel_index(moved.output, y.shape))
        return (f"{where} is wrong for {loss.wrt!r}: output {out} moved by {moved.change:.3g} "
                f"when only elements that do not reach it were perturbed (colour {moved.colour})")
    # (b) compares D(t) of the true L along u with the coloured values whose verdict rests
    # on D(h) itself: not those at a kink or decided on a refined step (near a kink or an
    # edge, which the direction's own step t would cross). Failing elements decided on a
    # refined step are re-measured one by one by (c) instead.
    base = cd(index, steps(loss.x).reshape(-1))  # cached: no evaluations
    smooth = ~v.kink & (v.numeric == base.central)
    sigma_L = floor
    for attempt in range(2):
        ok, projected, true, tol = directional_agreement(
            loss, v.numeric, v.atol, sigma_L, rng, VERIFY_DIRECTIONS, smooth)
        if ok or attempt:
            break
        sigma_L = max(floor, estimate_noise(loss, floor, rng)[1].sigma)
    if not ok:
        return (f"{where} is wrong for {loss.wrt!r}: along a random direction the coloured "
                f"gradient gives {projected:.6g}, the true L {true:.6g} (tolerance {tol:.3g}): "
                "outputs are attributed to the wrong elements")
    failing = np.flatnonzero(result.failed.reshape(-1))[:RECHECK] \
        if result.failed is not None else np.array([], dtype=np.int64)
    if failing.size:
        h = steps(loss.x).reshape(-1)[failing]
        bad = plain_recheck(loss, L0, failing, v.numeric[failing], v.atol[failing], sigma_L, h)
        if bad is not None:
            i = tuple(int(q) for q in np.unravel_index(bad, a.shape))
            return (f"{where} is wrong for {loss.wrt!r}: element {i}'s coloured difference "
                    "disagrees with its own central difference (misattributed outputs)")
    if result.status == "fail":
        said = jacobian.diagnose(cd, a, v.atol, result.rtol, y.shape)
        result.diagnosis = "; ".join(filter(None, [result.diagnosis, said]))
    result.mode = "structured"
    result.notes.append(
        f"structured exhaustive: {pattern.label}, {pattern.count} colours for {a.size} "
        f"elements ({cd.colours_evaluated} colour evaluations over all stages)")
    return result
