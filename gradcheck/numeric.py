"""Central finite differences of the scalar loss L(x) = <g, forward(**case, wrt=x)>.

The noise model, stated once (every tolerance in gradcheck follows from it):

* step      h_i = eps**(1/3) * max(1, |x_i|): balances truncation (~h^2) and rounding (~noise/h);
* noise     sigma_L, the rounding noise of one evaluation of L, measured from a difference
            table of L along a random direction (Moré & Wild's ECnoise), and floored by
            eps * (sum|g*y| + |g|_1 * max|inputs|), the magnitudes that flow through L;
* rounding  error of a central difference at step h: sigma_L / h;
* truncation error of D(h): |D(h) - D(2h)| / 3 (Richardson), computed where it is needed.

Perturbed copies of the input are evaluated in chunks of rows when the forward broadcasts
over a leading batch axis (one reused buffer, under a memory budget), else one call each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_BUDGET = 256 * 2**20  # bytes of perturbed inputs and outputs held at once
ECNOISE_POINTS = 7  # evaluations in the noise difference table (orders 1..6)


def eps_of(dtype: Any) -> float:
    return float(np.finfo(dtype).eps)


def steps(x: np.ndarray) -> np.ndarray:
    """The base step per element, h_i = eps^(1/3) * max(1, |x_i|), in float64."""
    scale = np.maximum(1.0, np.abs(x.astype(np.float64)))
    return np.multiply(eps_of(x.dtype) ** (1 / 3), scale)


def loss_rows(Y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """<g, y> for each row of Y, reduced the same deterministic way for every path."""
    k = Y.shape[0]
    rows: np.ndarray = (Y * g).reshape(k, -1).sum(axis=1, dtype=np.float64)
    return rows


class Loss:
    """Evaluates L at perturbed copies of ``case[wrt]``, counting evaluations."""

    def __init__(
        self,
        forward: Callable[..., Any],
        case: dict[str, Any],
        wrt: str,
        g: np.ndarray,
        *,
        batched: bool,
        budget: int = DEFAULT_BUDGET,
        check_output: Callable[[Any, tuple[int, ...]], np.ndarray] | None = None,
    ) -> None:
        self.forward, self.case, self.wrt, self.g = forward, case, wrt, g
        self.x = case[wrt]
        self.batched = batched
        self.check_output = check_output
        row_bytes = self.x.nbytes + 2 * max(g.nbytes, 8)
        self.chunk = max(1, int(budget // row_bytes)) if batched else 1
        self.evaluations = 0

    def _call(self, X: np.ndarray) -> np.ndarray:
        k = X.shape[0]
        self.evaluations += k
        if self.batched:
            out = self.forward(**{**self.case, self.wrt: X})
            expect = (k, *self.g.shape)
            Y = self.check_output(out, expect) if self.check_output else np.asarray(out)
            return loss_rows(Y, self.g)
        rows = []
        for r in range(k):
            out = self.forward(**{**self.case, self.wrt: X[r]})
            y = self.check_output(out, self.g.shape) if self.check_output else np.asarray(out)
            rows.append(loss_rows(y[None], self.g)[0])
        return np.array(rows, dtype=np.float64)

    def rows(self, X: np.ndarray) -> np.ndarray:
        """L at each row of X (shape (k,) + x.shape), in chunks."""
        return np.concatenate(
            [self._call(X[i : i + self.chunk]) for i in range(0, X.shape[0], self.chunk)]
        ) if X.shape[0] else np.zeros(0)

    def at_elements(self, flat_index: np.ndarray, values: np.ndarray) -> np.ndarray:
        """L with element ``flat_index[r]`` of x set to ``values[r]``, one row per r."""
        n_rows = flat_index.size
        out = np.empty(n_rows, dtype=np.float64)
        width = min(self.chunk, max(n_rows, 1))
        buf = np.empty((width, *self.x.shape), dtype=self.x.dtype)
        buf[...] = self.x
        flat = buf.reshape(width, -1)
        x_flat = self.x.reshape(-1)
        for start in range(0, n_rows, width):
            idx = flat_index[start : start + width]
            r = np.arange(idx.size)
            flat[r, idx] = values[start : start + width]
            out[start : start + idx.size] = self._call(buf[: idx.size])
            flat[r, idx] = x_flat[idx]
        return out

    def along(self, directions: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """L(x + t_r v_r) for each direction row v_r and step t_r."""
        out = np.empty(ts.size, dtype=np.float64)
        for start in range(0, ts.size, self.chunk):
            t = ts[start : start + self.chunk]
            v = directions[start : start + self.chunk]
            X = (self.x + t.reshape((-1,) + (1,) * self.x.ndim) * v).astype(self.x.dtype)
            out[start : start + t.size] = self._call(X)
        return out


@dataclass
class Differences:
    """Central and one-sided differences of L at a set of elements, for one step multiple."""

    index: np.ndarray  # flat indices
    h: np.ndarray  # actual half-width of the stencil, (x+ - x-)/2
    central: np.ndarray  # (L+ - L-) / (x+ - x-)
    curvature_gap: np.ndarray  # |L+ - 2 L0 + L-| / h  = |forward - backward one-sided slope|
    forward_slope: np.ndarray
    backward_slope: np.ndarray


def differences(loss: Loss, L0: float, index: np.ndarray, h: np.ndarray) -> Differences:
    """Differences at flat ``index`` with nominal steps ``h`` (the effective step is exact)."""
    x = loss.x.reshape(-1)[index]
    xp = (x.astype(np.float64) + h).astype(x.dtype)
    xm = (x.astype(np.float64) - h).astype(x.dtype)
    L = loss.at_elements(np.concatenate([index, index]), np.concatenate([xp, xm]))
    Lp, Lm = L[: index.size], L[index.size :]
    up = xp.astype(np.float64) - x
    down = x.astype(np.float64) - xm
    width = up + down
    return Differences(
        index=index,
        h=width / 2,
        central=(Lp - Lm) / width,
        curvature_gap=np.abs(Lp - 2 * L0 + Lm) / (width / 2),
        forward_slope=(Lp - L0) / up,
        backward_slope=(L0 - Lm) / down,
    )


@dataclass
class Noise:
    sigma: float  # the noise level used: max(measured, floor)
    measured: float  # ECnoise estimate (0 when L did not change at all)
    floor: float  # eps * magnitudes flowing through L
    how: str  # "measured", "floor", or "upper bound"


def _ecnoise(values: np.ndarray) -> tuple[float, str]:
    """Moré & Wild's ECnoise on equally spaced values: (sigma, 'ok'|'flat'|'smooth')."""
    f = values.astype(np.float64).copy()
    m = f.size - 1
    if np.all(f == f[0]):
        return 0.0, "flat"
    levels, sign_change = np.zeros(m), np.zeros(m, dtype=bool)
    gamma = 1.0
    for j in range(m):
        f = np.diff(f)
        gamma *= 0.5 * (j + 1) / (2 * (j + 1) - 1)  # gamma_k = (k!)^2 / (2k)!
        levels[j] = np.sqrt(gamma * np.mean(f**2))
        sign_change[j] = f.min() * f.max() < 0
    for k in range(m - 2):
        window = levels[k : k + 3]
        if window.max() <= 4 * window.min() and sign_change[k]:
            return float(levels[k]), "ok"
    return float(levels[-1]), "smooth"


def estimate_noise(
    loss: Loss, L0: float, magnitude: float, rng: np.random.Generator
) -> Noise:
    """Rounding noise of L: a difference table along a random direction, floored."""
    x = loss.x
    eps = eps_of(x.dtype)
    floor = eps * magnitude
    direction = rng.choice([-1.0, 1.0], size=x.shape) * np.maximum(1.0, np.abs(x))
    half = ECNOISE_POINTS // 2
    k = np.arange(-half, half + 1, dtype=np.float64)
    measured, how = 0.0, "flat"
    for delta in (eps**0.5, eps**0.75, eps**0.9):
        ts = k * delta
        values = loss.along(np.broadcast_to(direction, (k.size, *x.shape)), ts)
        values[half] = L0
        measured, how = _ecnoise(values)
        if how != "smooth":
            break
    if how == "smooth":  # no noise level found: the highest-order difference bounds it
        return Noise(max(measured, floor), measured, floor, "upper bound")
    sigma = max(measured, floor)
    return Noise(sigma, measured, floor, "measured" if measured >= floor else "floor")


def numeric_gradient(
    f: Callable[[np.ndarray], Any], x: np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of a scalar function f at x by central differences, with an error bound.

    Returns ``(gradient, error)``: the Richardson-extrapolated difference (4 D(h) - D(2h)) / 3
    and a bound on its error, sigma_L / h_i + |D(h) - D(2h)| / 3 (rounding plus the truncation
    error of D(h) itself, which the extrapolated value improves on). 4n + 8 evaluations.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)

    def forward(x: np.ndarray) -> np.ndarray:
        return np.asarray(f(x), dtype=np.float64)

    loss = Loss(forward, {"x": x}, "x", np.ones(()), batched=False)
    L0 = float(loss.rows(x[None])[0])
    magnitude = abs(L0) + float(np.max(np.abs(x), initial=0.0))
    noise = estimate_noise(loss, L0, magnitude, np.random.default_rng(seed))
    index = np.arange(x.size)
    h = steps(x).reshape(-1)
    d1 = differences(loss, L0, index, h)
    d2 = differences(loss, L0, index, 2 * h)
    error = noise.sigma / d1.h + np.abs(d1.central - d2.central) / 3
    gradient = (4 * d1.central - d2.central) / 3
    return gradient.reshape(x.shape), error.reshape(x.shape)
