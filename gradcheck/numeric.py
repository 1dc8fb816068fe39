"""Central finite differences of the scalar loss L(x) = <g, forward(**case, wrt=x)>.

The noise model, stated once (every tolerance in gradcheck follows from it):

* step      h_i = eps**(1/3) * max(1, |x_i|): balances truncation (~h^2) and rounding (~noise/h);
* noise     sigma_L, the rounding noise of one evaluation of L: at least
            eps * (|g*y|_2 + |g|_2 * max|inputs|), the magnitudes that flow through L
            (per output, added as independent roundings add: as sqrt(n)), and
            measured from a difference table of L along a random direction (Moré & Wild's
            ECnoise, ``gradcheck.noise``) when a verdict at that floor is not a plain pass;
* rounding  error of a central difference at step h: sigma_i / h, where sigma_i is sigma_L
            or eps * max(|L(x+h)|, |L(x-h)|), whichever is larger (L may be far from 0
            at x +- h when it is 0 at x);
* truncation error of D(h): |D(h) - D(2h)| / 3 (Richardson), computed where it is needed;
* magnitudes are summed scaled (a power of two, exact) or capped, never squared unscaled:
  no estimate overflows at any finite input (see ``gradcheck.judge`` for what is done where
  a step leaves the forward's domain or L itself would overflow).

Perturbed copies of the input are evaluated in chunks of rows when the forward broadcasts
over a leading batch axis, else one call each. A chunk is one reused buffer, sized to stay
in cache (CACHE_BYTES of inputs and outputs) and always within the memory budget, less the
room reserved for arrays held beside it (the analytic gradient, one direction).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_BUDGET = 256 * 2**20  # bytes of perturbed inputs and outputs held at once
CACHE_BYTES = 4 * 2**20  # a chunk of rows larger than this runs out of cache: slower per row
ELEMENTS = 1 << 18  # element-wise work on huge inputs is done in slices of this many


# The argument that carries the leading batch axis during a batched forward call, for
# forwards (the framework adapters) that must know which one it is; None outside such a call.
BATCHED_ARGUMENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gradcheck_batched_argument", default=None)


def call_batched(forward: Callable[..., Any], case: dict[str, Any], wrt: str,
                 X: np.ndarray) -> Any:
    """``forward`` on ``case`` with ``X``, a leading batch axis of rows, in place of
    ``case[wrt]``, with BATCHED_ARGUMENT saying so."""
    token = BATCHED_ARGUMENT.set(wrt)
    try:
        return forward(**{**case, wrt: X})
    finally:
        BATCHED_ARGUMENT.reset(token)


def eps_of(dtype: Any) -> float:
    return float(np.finfo(dtype).eps)


def steps(x: np.ndarray) -> np.ndarray:
    """The base step per element, h_i = eps^(1/3) * max(1, |x_i|), in float64."""
    scale = np.maximum(1.0, np.abs(x.astype(np.float64)))
    return np.multiply(eps_of(x.dtype) ** (1 / 3), scale)


def loss_rows(Y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """<g, y> for each row of Y, reduced the same deterministic way for every path (rows
    longer than ELEMENTS slice by slice: no Y-sized temporary)."""
    k = Y.shape[0]
    Yf, gf = Y.reshape(k, -1), g.reshape(-1)
    if gf.size <= ELEMENTS:
        rows: np.ndarray = (Yf * gf).sum(axis=1, dtype=np.float64)
        return rows
    parts = [(Yf[:, i : i + ELEMENTS] * gf[i : i + ELEMENTS]).sum(axis=1, dtype=np.float64)
             for i in slices(gf.size)]
    return np.sum(parts, axis=0)


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
        reserve: int = 0,
    ) -> None:
        self.forward, self.case, self.wrt, self.g = forward, case, wrt, g
        self.x = case[wrt]
        self.batched, self.budget = batched, budget
        self.check_output = check_output
        row_bytes = self.x.nbytes + 2 * max(g.nbytes, 8)  # input row, output row, <g, y> terms
        fits = max(1, int((budget - reserve) // row_bytes))
        self.chunk = min(fits, max(1, CACHE_BYTES // row_bytes)) if batched else 1
        self.evaluations = 0

    def _call(self, X: np.ndarray) -> np.ndarray:
        """L for each row of X; NaN or inf where the forward is not finite there (a step
        that left its domain: the judge decides what that means)."""
        k = X.shape[0]
        self.evaluations += k
        with np.errstate(all="ignore"):
            return self._rows(X, k)

    def _rows(self, X: np.ndarray, k: int) -> np.ndarray:
        if self.batched:
            out = call_batched(self.forward, self.case, self.wrt, X)
            expect = (k, *self.g.shape)
            Y = self.check_output(out, expect) if self.check_output else np.asarray(out)
            return loss_rows(Y, self.g)
        rows = []
        for r in range(k):
            out = self.forward(**{**self.case, self.wrt: X[r]})
            y = self.check_output(out, self.g.shape) if self.check_output else np.asarray(out)
            rows.append(loss_rows(y[None], self.g)[0])
        return np.array(rows, dtype=np.float64)

    def at_x(self) -> float:
        """L at x itself, in a call of its own and without a copy of x."""
        return float(self._call(self.x[None])[0])

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

    def along(self, directions: Sequence[np.ndarray], ts: Sequence[float]) -> np.ndarray:
        """L(x + t_r v_r) for each direction v_r (float64) and step t_r, one reused buffer."""
        n_rows = len(ts)
        out = np.empty(n_rows, dtype=np.float64)
        width = min(self.chunk, max(n_rows, 1))
        buf = np.empty((width, *self.x.shape), dtype=self.x.dtype)
        for start in range(0, n_rows, width):
            stop = min(start + width, n_rows)
            for r in range(start, stop):
                shifted(self.x, directions[r], float(ts[r]), out=buf[r - start, ...])
            out[start:stop] = self._call(buf[: stop - start])
        return out


def shifted(x: np.ndarray, v: np.ndarray, t: float, out: np.ndarray) -> np.ndarray:
    """x + t v rounded once to x's dtype, into ``out``; exactly x when t == 0."""
    if t == 0:
        out[...] = x
    elif out.dtype == np.float64 and v.dtype == np.float64:
        np.multiply(v, t, out=out)
        out += x
    else:
        out[...] = x + t * v
    return out


def slices(n: int) -> range:
    """Starts of the ELEMENTS-sized slices of a flat array of n elements."""
    return range(0, n, ELEMENTS)


def max_abs(v: np.ndarray) -> float:
    """max |v| (0 for an empty array), without an |v|-sized temporary."""
    return max(float(v.max()), -float(v.min())) if v.size else 0.0


def scaled_direction(draw: np.ndarray, x: np.ndarray, *, own: bool = False) -> np.ndarray:
    """draw * max(1, |x|) element-wise, in place (slice by slice: no x-sized temporaries);
    with ``own``, draw * |x| where 0 < |x| < 1 (the element's own scale: a pole or domain
    edge at 0 is that far away)."""
    flat, xf = draw.reshape(-1), x.reshape(-1)
    for i in slices(flat.size):
        size = np.abs(xf[i : i + ELEMENTS]).astype(np.float64)
        scale = np.maximum(1.0, size)
        if own:
            scale = np.where((size > 0) & (size < 1), size, scale)
        flat[i : i + ELEMENTS] *= scale
    return draw


def power_of_two(v: float) -> float:
    """The power of two at or above |v| (1 for 0): dividing by it is exact."""
    return math.ldexp(1.0, math.frexp(v)[1]) if v else 1.0


def norm(v: np.ndarray, top: float) -> float:
    """sqrt(sum(v^2)) for max|v| = top, scaled so that no square overflows."""
    c, vf = power_of_two(top), v.reshape(-1)
    sums = [np.sum(np.square(vf[i : i + ELEMENTS] / c)) for i in slices(vf.size)]
    return float(np.sqrt(np.sum(sums))) * c


def rms_scale(x: np.ndarray) -> float:
    """sqrt(mean(max(1, |x|)^2)), slice by slice, scaled: no square overflows."""
    xf = x.reshape(-1)
    c = power_of_two(max(1.0, max_abs(xf)))
    sums = []
    for i in slices(xf.size):
        s = np.maximum(1.0, np.abs(xf[i : i + ELEMENTS].astype(np.float64))) / c
        sums.append(np.sum(s**2))
    return float(np.sqrt(np.sum(sums) / xf.size)) * c


def random_direction(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A random unit direction: uniform in [-1, 1) (a continuous law, so no two errors cancel
    exactly, and three times cheaper to draw than a normal one), scaled element-wise by
    max(1, |x|)."""
    v = rng.random(x.shape)
    v *= 2.0
    v -= 1.0
    v = scaled_direction(v, x)
    v /= norm(v, max(1.0, max_abs(x)))  # no BLAS: threaded dot products stall on busy machines
    return v


@dataclass
class Differences:
    """Central and one-sided differences of L at a set of elements, for one step multiple."""

    index: np.ndarray  # flat indices
    h: np.ndarray  # actual half-width of the stencil, (x+ - x-)/2
    magnitude: np.ndarray  # max(|L+|, |L-|): eps times it bounds their own rounding
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
        magnitude=np.maximum(np.abs(Lp), np.abs(Lm)),
        central=(Lp - Lm) / width,
        curvature_gap=np.abs(Lp - 2 * L0 + Lm) / (width / 2),
        forward_slope=(Lp - L0) / up,
        backward_slope=(L0 - Lm) / down,
    )
