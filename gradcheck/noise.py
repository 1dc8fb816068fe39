"""The rounding noise of L, measured (Moré & Wild's ECnoise), and ``numeric_gradient``.

The noise of one evaluation of L is taken from difference tables of L along a random
direction (random signs times each element's scale: max(1, |x_i|), or |x_i| where
0 < |x_i| < 1, as for the refined steps of ``gradcheck.judge``; each element's increment a
multiple of its unit in the last place, so that the table's inputs are exact): 7 values at
spacings eps^0.5, eps^0.75 and eps^0.9, and the lowest noise level
any of them shows, or the lowest bound on it (the highest-order difference of a table that
shows no level: a coarser table can take a pole or kink within it for noise; rounding
noise does not depend on the spacing); one table at eps^(1/3) when neighbours at eps^0.5
are equal (L is rounded more coarsely than the spacing). A table that meets a non-finite L
(the direction left the forward's domain) is not used. The values are scaled by a power
of two before they are squared, so no estimate overflows at any finite magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.guard import Broken, is_float
from gradcheck.numeric import (
    Loss,
    differences,
    eps_of,
    max_abs,
    power_of_two,
    scaled_direction,
    steps,
)

ECNOISE_POINTS = 7  # evaluations in the noise difference table (orders 1..6)
NOISE_STEPS = (0.5, 0.75, 0.9)  # the table's spacing, as powers of eps, tried in turn
FLAT_STEP = 1 / 3  # the spacing, as a power of eps, when neighbours at the first are equal


@dataclass
class Noise:
    sigma: float  # the noise level used: max(measured, floor)
    measured: float  # ECnoise estimate (0 when L did not change at all)
    floor: float  # eps * magnitudes flowing through L
    how: str  # "measured", "floor", "upper bound", or "outside" (every table left the domain)


def _ecnoise(values: Sequence[float]) -> tuple[float, str]:
    """Moré & Wild's ECnoise on equally spaced values: (sigma, 'ok'|'flat'|'smooth').

    On 7 values, plain Python floats are much cheaper than numpy calls. The values are
    divided by a power of two at or above their largest difference (exact), so that no
    square overflows; the levels are scaled back at the end.
    """
    f = [float(v) for v in values]
    m = len(f) - 1
    if all(v == f[0] for v in f):
        return 0.0, "flat"
    c = power_of_two(max(abs(b - a) for a, b in zip(f[:-1], f[1:], strict=True)))
    levels, sign_change = [], []
    gamma = 1.0
    for j in range(m):
        f = [(b / c - a / c) if j == 0 else b - a for a, b in zip(f[:-1], f[1:], strict=True)]
        gamma *= 0.5 * (j + 1) / (2 * (j + 1) - 1)  # gamma_k = (k!)^2 / (2k)!
        total = 0.0
        for v in f:
            total += v * v
        levels.append(math.sqrt(gamma * (total / len(f))) * c)
        sign_change.append(min(f) * max(f) < 0)
    for k in range(m - 2):
        window = levels[k : k + 3]
        if max(window) <= 4 * min(window) and sign_change[k]:
            return levels[k], "ok"
    return levels[-1], "smooth"


def estimate_noise(
    loss: Loss, floor: float | Callable[[float], float], rng: np.random.Generator
) -> tuple[float, Noise]:
    """(L0, noise): L at x and the rounding noise of L from a difference table along a
    random direction, floored by ``floor`` (eps times the magnitudes in L: a number, or a
    function of L0). L0 is evaluated in the same batched call as the first table."""
    x = loss.x
    eps = eps_of(x.dtype)
    # random signs, the same draws as rng.choice([-1.0, 1.0]) but without its overhead
    signs = np.where(rng.integers(0, 2, size=x.shape).astype(bool), 1.0, -1.0)
    direction = scaled_direction(np.asarray(signs, dtype=np.float64), x, own=True)
    half = ECNOISE_POINTS // 2
    k = [float(i) for i in range(-half, half + 1) if i != 0]

    def increment(power: float) -> np.ndarray:
        """The table's step along the direction at spacing eps**power, each element's
        rounded to a multiple of its own unit in the last place: x + k * step is then
        exact, and the rounding of the perturbed input (|f'| ulp(x), large near a pole)
        is not taken for noise of L."""
        ulp = np.asarray(np.spacing(np.abs(x)), dtype=np.float64).reshape(-1)
        step = np.asarray(direction * eps**power).reshape(-1)  # (0-d arrays too)
        with np.errstate(over="ignore"):
            units = step / ulp
        snap = np.abs(units) < 2.0**52  # (near 0 every step is a representable change)
        step[snap] = np.round(units[snap]) * ulp[snap]
        return step.reshape(x.shape)

    def table(power: float, L0: float) -> list[float]:
        values = list(loss.along([increment(power)] * len(k), k))
        return values[:half] + [L0] + values[half:]

    # L0 rides in the first table's batched call (check_vjp compares it with a call of its own)
    L0, *first = loss.along([increment(NOISE_STEPS[0])] * (len(k) + 1), [0.0, *k])
    values = first[:half] + [L0] + first[half:]
    low = floor(L0) if callable(floor) else floor
    if _finite(values) and _quantized(values):
        # L did not change between neighbours: it is rounded more coarsely than the spacing
        # (a forward computing in float32, say); a table as wide as the steps shows how
        measured, how = _ecnoise(table(FLAT_STEP, L0))
    else:
        # Every spacing, and the lowest noise level found: rounding noise does not depend
        # on the spacing, while the function's own variation (a pole or a kink within the
        # table) shrinks with it. A table that meets a non-finite L (it left the domain) or
        # equal neighbours (too fine to see the rounding) is not used.
        tables = [values] + [table(power, L0) for power in NOISE_STEPS[1:]]
        found = [_ecnoise(t) for t in tables if _finite(t) and not _quantized(t)]
        # (a table that finds no level, 'smooth', bounds the noise by its highest order)
        if not found:
            return L0, Noise(low, 0.0, low, "outside")
        measured, how = min(found)
    if how == "smooth":  # no noise level found: the highest-order difference bounds it
        return L0, Noise(max(measured, low), measured, low, "upper bound")
    sigma = max(measured, low)
    return L0, Noise(sigma, measured, low, "measured" if measured >= low else "floor")


def _finite(values: Sequence[float]) -> bool:
    return all(map(math.isfinite, values))


def _quantized(values: Sequence[float]) -> bool:
    """Two neighbours in the table are equal: L moved less than its own rounding."""
    return any(a == b for a, b in zip(values[:-1], values[1:], strict=True))


def numeric_gradient(
    f: Callable[[np.ndarray], Any], x: np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of a scalar function f at x by central differences, with an error estimate.

    Returns ``(gradient, error)``: the Richardson-extrapolated difference (4 D(h) - D(2h)) / 3
    and an estimate of its error (about one standard deviation: the engine allows SAFETY
    times it), 1.5 sigma_L / h_i + |D(h) - D(2h)| / 3: the rounding of (4 D(h) - D(2h)) / 3,
    (4 sigma/h + sigma/2h) / 3, plus the truncation error of D(h) itself, which the
    extrapolated value improves on. 4n + 7 evaluations
    (6 more for each further noise table).
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)

    def forward(x: np.ndarray) -> np.ndarray:
        return np.asarray(f(x), dtype=np.float64)

    loss = Loss(forward, {"x": x}, "x", np.ones(()), batched=False)
    eps, scale = eps_of(x.dtype), max_abs(x)
    L0, noise = estimate_noise(loss, lambda L0: eps * abs(L0) + eps * scale,
                               np.random.default_rng(seed))
    index = np.arange(x.size)
    h = steps(x).reshape(-1)
    d1 = differences(loss, L0, index, h)
    d2 = differences(loss, L0, index, 2 * h)
    sigma = np.maximum(noise.sigma, eps * d1.magnitude)
    error = 1.5 * sigma / d1.h + np.abs(d1.central - d2.central) / 3
    gradient = (4 * d1.central - d2.central) / 3
    return gradient.reshape(x.shape), error.reshape(x.shape)


def magnitudes(forward: Callable[..., Any], case: Mapping[str, Any]) -> np.ndarray | None:
    """|forward| at the inputs' absolute values: for sums of products (``x @ W.T + b``)
    exactly the sum of the terms' magnitudes, whose eps-fraction bounds the rounding of
    each output however much the terms cancel. None if the forward cannot be evaluated
    there or gives no finite array."""
    try:
        out = forward(**{k: np.abs(v) if is_float(v)
                         else v for k, v in case.items()})
        terms = np.abs(np.asarray(out, dtype=np.float64))
    except (Broken, TypeError, ValueError):
        return None
    return terms if np.isfinite(terms).all() else None


def term_floor(
    forward: Callable[..., Any], case: Mapping[str, Any], g: np.ndarray, eps: float
) -> float:
    """eps * <|g|, magnitudes of the forward's terms>: the rounding noise of L when its
    terms cancel (W x ~ 1e-9 from terms ~1e6), which the noise floor, built from |y| and
    max|inputs|, does not see. Used only to excuse differences between two evaluations of
    L at the same input (a batched call rounds differently from a single one), never to
    widen a verdict's tolerance; 0 when the magnitudes cannot be had."""
    terms = magnitudes(forward, case)
    if terms is None or terms.shape != g.shape:
        return 0.0
    with np.errstate(over="ignore"):
        return float(np.sum(np.abs(g.astype(np.float64)) * (eps * terms)))
