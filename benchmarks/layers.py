"""Layer objects: a fresh object per evaluation against one object reused per configuration.

A layer declared with ``gradcheck.Layer`` is evaluated one perturbed input per forward
call (objects do not broadcast over a batch of perturbations). By default every
evaluation builds a fresh object; ``reusable=True`` builds one per configuration and only
sets the parameters again. This script times both on the same cases, interleaved, medians::

    python benchmarks/layers.py            # ~1-2 min on 2 cores
    python benchmarks/layers.py --quick    # smoke run

The layers are written the way small numpy libraries write them: the convolution's
constructor draws He-initialised weights and precomputes the im2col gather indices for its
input size (the work a forward then reuses); the dense layer's constructor only draws its
weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradcheck import Layer  # noqa: E402
from gradcheck.check import check_vjp  # noqa: E402


class Conv:
    """2-D convolution (no padding), stride s, parameters in ``self.params``."""

    def __init__(self, channels: int, filters: int, k: int, s: int, height: int, width: int):
        rng = np.random.default_rng(0)
        self.s, self.k = s, k
        self.params = {"W": rng.standard_normal((filters, channels, k, k))
                       * np.sqrt(2 / (channels * k * k)), "b": np.zeros(filters)}
        self.ho, self.wo = (height - k) // s + 1, (width - k) // s + 1
        c, i, j = np.meshgrid(np.arange(channels), np.arange(k), np.arange(k), indexing="ij")
        oi, oj = np.meshgrid(np.arange(self.ho) * s, np.arange(self.wo) * s, indexing="ij")
        self.rows = (i.reshape(-1, 1) + oi.reshape(1, -1))
        self.cols = (j.reshape(-1, 1) + oj.reshape(1, -1))
        self.chan = np.broadcast_to(c.reshape(-1, 1), self.rows.shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        self.X = x[self.chan, self.rows, self.cols]  # (C*k*k, Ho*Wo)
        W = self.params["W"]
        y = W.reshape(W.shape[0], -1) @ self.X + self.params["b"][:, None]
        return y.reshape(W.shape[0], self.ho, self.wo)

    def backward(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        W = self.params["W"]
        d = dy.reshape(dy.shape[0], -1)
        dW = (d @ self.X.T).reshape(W.shape)
        dX = W.reshape(W.shape[0], -1).T @ d
        dx = np.zeros_like(self.x)
        np.add.at(dx, (self.chan, self.rows, self.cols), dX)
        return dx, dW, d.sum(axis=1)


class Dense:
    def __init__(self, n_in: int, n_out: int):
        rng = np.random.default_rng(0)
        self.params = {"W": rng.standard_normal((n_out, n_in)), "b": np.zeros(n_out)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return dy @ self.params["W"], dy.T @ self.x, dy.sum(axis=0)


def declare(cls: type, reusable: bool) -> Layer:
    d = Layer(cls.__name__.lower(), cls, cases=st.nothing(), inputs="x",
              params={"W": "params.W", "b": "params.b"}, reusable=reusable)
    d.backward(("x", "W", "b"), lambda layer, dy: layer.backward(dy))
    return d


def cases(rng: np.random.Generator, quick: bool) -> list[tuple[type, dict[str, Any]]]:
    conv = [(Conv, {"x": rng.standard_normal((c, h, h)), "channels": c, "filters": f, "k": 3,
                    "s": s, "height": h, "width": h})
            for c, f, h, s in ([(3, 4, 8, 1)] if quick else [(3, 4, 8, 1), (3, 8, 16, 1),
                                                             (8, 8, 16, 2)])]
    dense = [(Dense, {"x": rng.standard_normal((b, n)), "n_in": n, "n_out": m})
             for b, n, m in ([(4, 8, 8)] if quick else [(4, 8, 8), (16, 64, 32)])]
    out = []
    for cls, case in conv + dense:  # the parameters a fresh object has, drawn into the case
        config = {k: v for k, v in case.items() if k != "x"}
        layer = cls(**config)
        out.append((cls, {**case, "W": layer.params["W"] + rng.standard_normal(
            layer.params["W"].shape), "b": rng.standard_normal(layer.params["b"].shape)}))
    return out


def check_all(d: Layer, case: dict[str, Any]) -> float:
    """Seconds to check every formula of d on case (each must pass)."""
    start = time.perf_counter()
    for f in d.formulas:
        r = check_vjp(d.forward, f.vjp, case, f.wrt, seed=0)
        if r.status != "pass":
            raise SystemExit(f"{f.id} on {r.case_text()}: {r.status}\n{r.explain()}")
    return time.perf_counter() - start


def label(cls: type, case: dict[str, Any]) -> str:
    if cls is Conv:
        return (f"conv {case['channels']}x{case['height']}x{case['width']}, "
                f"{case['filters']} filters 3x3, stride {case['s']}")
    return f"dense {case['x'].shape[0]}x{case['n_in']} -> {case['n_out']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    rng = np.random.default_rng(0)
    print(f"{'case':<40} {'n':>6} {'fresh':>10} {'reusable':>10} {'speed-up':>9}  builds")
    for cls, case in cases(rng, args.quick):
        fresh, reused = declare(cls, False), declare(cls, True)
        n = sum(np.size(case[k]) for k in ("x", "W", "b"))
        times: dict[bool, list[float]] = {False: [], True: []}
        builds = {}
        for r in range(repeats + 1):  # round 0 warms up
            for reusable, d in ((False, fresh), (True, reused)):
                count = [0]
                original = cls.__init__

                def counting(self: Any, *a: Any, _o: Any = original, _n: list[int] = count,
                             **k: Any) -> None:
                    _n[0] += 1
                    _o(self, *a, **k)

                cls.__init__ = counting  # type: ignore[method-assign]
                try:
                    t = check_all(d, case)
                finally:
                    cls.__init__ = original  # type: ignore[method-assign]
                if r:
                    times[reusable].append(t)
                builds[reusable] = count[0]
        a, b = statistics.median(times[False]), statistics.median(times[True])
        print(f"{label(cls, case):<40} {n:>6} {a * 1e3:>8.1f}ms {b * 1e3:>8.1f}ms "
              f"{a / b:>8.2f}x  {builds[False]} -> {builds[True]}")


if __name__ == "__main__":
    main()
