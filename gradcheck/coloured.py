"""Coloured central differences of the output vector.

With a declared structure (``gradcheck.structure``), the elements of one colour reach
disjoint sets of outputs, so one evaluation at x + h e_S (h_i for each member i of S)
gives every member's difference at once: output j's change is attributed to the member
that reaches it, and member i's restricted loss is L_i = sum_{j owned by i} g_j y_j. The
per-element differences are those of L_i, in the same ``Differences`` form the element
judge reads, so the staged verdict (``gradcheck.judge``) is unchanged; each stage costs 2
evaluations per colour it touches, not per element.

Noise model, moved to the outputs: output j's rounding is at least
    s_j = eps * (|y_j| + max|inputs|)        (the scalar model's floor, term by term)
and, when a verdict at that floor is not a pass, max(s_j * rho, e_j) with e_j output j's
own ECnoise level (``measure_noise``) and rho the median over outputs of e_j / s_j
(pooled, so no single 7-point estimate decides an element's tolerance). An element's
restricted loss has the noise
sigma_i = sqrt(sum_{j owned by i} g_j^2 s_j^2) (independent roundings of distinct outputs).

Outputs that move though no perturbed member reaches them are recorded (``moved``) for
the self-verification in ``gradcheck.structured``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcheck import compare
from gradcheck.noise import NOISE_STEPS
from gradcheck.numeric import (
    CACHE_BYTES,
    Differences,
    Loss,
    call_batched,
    eps_of,
    scaled_direction,
)
from gradcheck.structure import Pattern

ECNOISE_HALF = 3  # the output noise table has 2 * 3 + 1 points


@dataclass
class Moved:
    """An output that moved though no perturbed member reaches it (self-verification a)."""

    output: int
    colour: int
    change: float


class ColouredDifferences:
    """Per-element differences from coloured evaluations of the output vector."""

    def __init__(self, loss: Loss, y: np.ndarray, pattern: Pattern, inputs_max: float) -> None:
        self.loss, self.pattern = loss, pattern
        self.x = loss.x
        self.g = np.asarray(loss.g, dtype=np.float64).reshape(-1)
        self.y0 = np.asarray(y, dtype=np.float64).reshape(-1)
        self.gy0 = self.g * self.y0
        eps = eps_of(self.x.dtype)
        self.floor = eps * (np.abs(self.y0) + inputs_max)  # s_j at the floor
        self.s = self.floor
        self.moved: list[Moved] = []
        self.colours_evaluated = 0
        self._cache: dict[tuple[bytes, bytes], Differences] = {}
        row = self.x.nbytes + 3 * self.y0.nbytes  # input row, output row, its float64 work
        fits = max(1, int(loss.budget // 2 // row))
        self.width = min(fits, max(1, CACHE_BYTES // row)) if loss.batched else 1

    def outputs(self, X: np.ndarray) -> np.ndarray:
        """forward at the rows of X, as float64 rows of outputs (counted as evaluations)."""
        k = X.shape[0]
        self.loss.evaluations += k
        with np.errstate(all="ignore"):  # as Loss: a step that left the domain is the judge's
            return self._outputs(X, k)

    def _outputs(self, X: np.ndarray, k: int) -> np.ndarray:
        if self.loss.batched:  # through call_batched, as Loss: adapters read the batch axis
            out = call_batched(self.loss.forward, self.loss.case, self.loss.wrt, X)
            Y = self.loss.check_output(out, (k, *self.loss.g.shape)) if self.loss.check_output \
                else np.asarray(out)
            return np.asarray(Y, dtype=np.float64).reshape(k, -1)
        rows = []
        for r in range(k):
            out = self.loss.forward(**{**self.loss.case, self.loss.wrt: X[r]})
            y = self.loss.check_output(out, self.loss.g.shape) if self.loss.check_output \
                else np.asarray(out)
            rows.append(np.asarray(y, dtype=np.float64).reshape(-1))
        return np.stack(rows)

    def __call__(self, index: np.ndarray, h: np.ndarray) -> Differences:
        key = (index.tobytes(), np.asarray(h).tobytes())
        if key not in self._cache:
            self._cache[key] = self._differences(index, h)
        return self._cache[key]

    def _owned(self, c: int, position: np.ndarray) -> np.ndarray:
        """Per output, the position in the current index of the member of colour c that
        reaches it, -1 where none (or that member is not being perturbed)."""
        owner = self.pattern.owner(c)
        if position.size == 0:  # every element is in the index, in order: owner = position
            return owner
        return np.where(owner >= 0, position[np.maximum(owner, 0)], -1)

    def _positions(self, index: np.ndarray) -> np.ndarray:
        """Flat element -> its position in ``index`` (-1 if absent); empty for all, in order."""
        if index.size == self.x.size and np.array_equal(index, np.arange(index.size)):
            return np.empty(0, dtype=np.int64)
        position = np.full(self.x.size, -1, dtype=np.int64)
        position[index] = np.arange(index.size)
        return position

    def _differences(self, index: np.ndarray, h: np.ndarray) -> Differences:
        x = self.x.reshape(-1)
        xi = x[index].astype(np.float64)
        xp, xm = (xi + h).astype(self.x.dtype), (xi - h).astype(self.x.dtype)
        position = self._positions(index)
        at = np.arange(index.size) if position.size == 0 else position  # element -> position
        colours = np.arange(self.pattern.count) if position.size == 0 else \
            np.unique(self.pattern.colour[index])
        self.colours_evaluated += colours.size
        k = index.size
        up_sum, down_sum, base = np.zeros(k), np.zeros(k), np.zeros(k)
        width = min(self.width, 2 * colours.size)
        buf = np.empty((width, *self.x.shape), dtype=self.x.dtype)
        buf[...] = self.x
        flat = buf.reshape(width, -1)
        if position.size == 0:
            by_colour = {int(c): self.pattern.members(int(c)) for c in colours}
        else:
            order = index[np.argsort(self.pattern.colour[index], kind="stable")]
            bounds = np.searchsorted(self.pattern.colour[order], np.append(colours, np.inf))
            by_colour = {int(c): order[bounds[i] : bounds[i + 1]] for i, c in enumerate(colours)}
        rows = [(int(c), sign) for c in colours for sign in (1, -1)]
        for start in range(0, len(rows), width):
            chunk = rows[start : start + width]
            for r, (c, sign) in enumerate(chunk):
                m = by_colour[c]
                flat[r, m] = (xp if sign > 0 else xm)[at[m]]
            Y = self.outputs(buf[: len(chunk)])
            for r, (c, sign) in enumerate(chunk):
                m = by_colour[c]
                flat[r, m] = x[m]
                if sign > 0:
                    own = self._owned(c, position)
                    valid = own >= 0
                    everyone = bool(valid.all())  # no mask needed, nothing to verify
                    pos = own if everyone else own[valid]
                dy = Y[r] - self.y0
                if not everyone:
                    self._verify(c, dy, valid)
                gdy = self.g * dy
                gdy = np.bincount(pos, weights=gdy if everyone else gdy[valid], minlength=k)
                if sign > 0:
                    up_sum += gdy
                    base += np.bincount(pos, weights=self.gy0 if everyone else self.gy0[valid],
                                        minlength=k)
                else:
                    down_sum -= gdy
        up = xp.astype(np.float64) - xi
        down = xi - xm
        span = up + down
        return Differences(
            index=index,
            h=span / 2,
            magnitude=np.maximum(np.abs(base + up_sum), np.abs(base - down_sum)),
            central=(up_sum + down_sum) / span,
            curvature_gap=np.abs(up_sum - down_sum) / (span / 2),
            forward_slope=up_sum / up,
            backward_slope=down_sum / down,
        )

    def _verify(self, c: int, dy: np.ndarray, owned: np.ndarray) -> None:
        """(a): outputs no perturbed member reaches must stay within their noise."""
        excess = np.where(owned, 0.0, np.abs(dy) - compare.SAFETY * self.s)
        j = int(np.argmax(excess))
        if excess[j] > 0:
            self.moved.append(Moved(j, c, float(abs(dy[j]))))

    def unexplained(self) -> Moved | None:
        """The first recorded move still beyond SAFETY times the current output noise."""
        for m in self.moved:
            if m.change > compare.SAFETY * self.s[m.output]:
                return m
        return None

    def sigma(self, index: np.ndarray) -> np.ndarray:
        """sigma_i = sqrt(sum_{j owned by i} g_j^2 s_j^2) for the elements ``index``."""
        position = self._positions(index)
        w = (self.g * self.s) ** 2
        total = np.zeros(index.size)
        colours = np.arange(self.pattern.count) if position.size == 0 else \
            np.unique(self.pattern.colour[index])
        for c in colours:
            own = self._owned(int(c), position)
            valid = own >= 0
            total += np.bincount(own[valid], weights=w[valid], minlength=index.size)
        return np.sqrt(total)

    def measure_noise(self, rng: np.random.Generator) -> None:
        """Moré and Wild's ECnoise for every output at once, from 7-point tables along a
        random direction (spacings eps^0.5, then finer for the outputs still smooth, as
        ``numeric.estimate_noise`` does for L): an output's level is that of the first
        order k whose levels k, k+1, k+2 agree within a factor 4 and whose differences
        change sign (noise, not truncation); an output that never shows one gets its
        finest table's highest-order level (an upper bound). Outputs with a level give
        the pooled ratio rho = median(level / floor); s_j = max(floor_j * max(rho, 1),
        level_j): one 7-point estimate never narrows a tolerance below the pooled one."""
        eps = eps_of(self.x.dtype)
        signs = np.where(rng.integers(0, 2, size=self.x.shape).astype(bool), 1.0, -1.0)
        v = scaled_direction(signs, self.x)
        level, found = np.zeros(self.y0.size), np.zeros(self.y0.size, dtype=bool)
        for power in NOISE_STEPS:
            spacing = eps**power
            diff = np.empty((2 * ECNOISE_HALF + 1, self.y0.size))
            for i in range(diff.shape[0]):
                t = (i - ECNOISE_HALF) * spacing
                X = (self.x.astype(np.float64) + t * v).astype(self.x.dtype)[None]
                diff[i] = self.outputs(X)[0]
            flat = np.all(diff == diff[0], axis=0)  # no change at all: no noise to see
            levels, changes, gamma = [], [], 1.0
            for order in range(1, diff.shape[0]):
                diff = np.diff(diff, axis=0)
                gamma *= 0.5 * order / (2 * order - 1)  # (k!)^2 / (2k)!
                levels.append(np.sqrt(gamma * np.mean(diff**2, axis=0)))
                changes.append(diff.min(axis=0) * diff.max(axis=0) < 0)
            level = np.where(found, level, np.where(flat, 0.0, levels[-1]))
            found |= flat
            for k in range(len(levels) - 2):
                window = np.stack(levels[k : k + 3])
                ok = ~found & changes[k] & (window.max(axis=0) <= 4 * window.min(axis=0))
                level[ok], found = levels[k][ok], found | ok
            if found.all():
                break
        level = np.nan_to_num(level, nan=0.0, posinf=0.0)  # a table that left the domain
        pooled = found & (self.floor > 0) & (level > 0)
        with np.errstate(over="ignore"):
            ratio = level[pooled] / self.floor[pooled]
        rho = float(np.median(ratio)) if ratio.size else 1.0
        self.s = np.maximum(self.floor * max(rho, 1.0), level)
