"""Verdicts near poles, domain edges, period multiples and ties, in float32 and float64.

For each family a closed-form function is checked at points drawn near its awkward spots
(log-uniform distances), with its correct derivative, its sign flip and twice it. Prints,
per dtype and family: correct formulas called fail / error / nonsmooth (not resolved), and
wrong formulas that passed or were not failed; then the totals and the unresolved rate
(correct checks answered 'nonsmooth', the issue's targets: <= 1 % float32, <= 0.2 % float64).

    python benchmarks/edges.py [--checks N] [--seed S]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

import gradcheck as gc

Draw = Callable[[np.random.Generator, int, np.dtype], np.ndarray]


ULPS = 256  # points are drawn at least this many units in the last place from an edge


def loguniform(rng: np.random.Generator, lo: np.ndarray | float, hi: float, n: int) -> np.ndarray:
    """10**U(log10 lo, log10 hi)."""
    return 10.0 ** rng.uniform(np.log10(lo), np.log10(hi), n)


def closest(edge: np.ndarray | float, dtype: np.dtype) -> np.ndarray:
    """The smallest distance drawn from ``edge``: ULPS units in the last place there, and
    no closer than 1e-6 (float32) or 1e-12 (float64) relative."""
    rel = 1e-6 if dtype == np.float32 else 1e-12
    edge = np.abs(np.asarray(edge, dtype=np.float64))
    return np.maximum(ULPS * np.spacing(edge.astype(dtype)).astype(np.float64),
                      rel * np.maximum(edge, 1.0))


def near_poles(rng, n, dtype):  # tan: pi/2 + k pi
    top = 10 if dtype == np.float32 else 1000
    pole = np.pi / 2 + rng.integers(-top, top, n) * np.pi
    return pole + rng.choice([-1, 1], n) * loguniform(rng, closest(pole, dtype), 0.1, n)


def near_zero(rng, n, dtype):
    return rng.choice([-1, 1], n) * near_zero_positive(rng, n, dtype)


def near_zero_positive(rng, n, dtype):  # 1e-6 (float32) or 1e-12 (float64) up to 1
    return loguniform(rng, closest(0.0, dtype), 1, n)


def near_one(rng, n, dtype):
    return rng.choice([-1, 1], n) * (1 - loguniform(rng, closest(1.0, dtype), 0.1, n))


def large(rng, n, dtype):  # sin far out: the step grows with |x|, the period does not
    top = 1e4 if dtype == np.float32 else 1e8
    return rng.choice([-1, 1], n) * loguniform(rng, 1, top, n)


def ties(rng, n, dtype):  # sort: neighbours a small gap apart
    base = rng.uniform(-10, 10)
    gaps = loguniform(rng, closest(10.0, dtype), 1, n)
    return base + np.cumsum(gaps) * rng.choice([-1, 1])


def sort_vjp(dy, x):
    out = np.empty_like(dy)
    out[np.argsort(x, axis=-1, kind="stable")] = dy
    return out


FAMILIES: dict[str, tuple[Callable, Callable, Draw]] = {
    "tan near poles": (lambda x: np.tan(x), lambda dy, x: dy / np.cos(x) ** 2, near_poles),
    "1/x near 0": (lambda x: 1 / x, lambda dy, x: -dy / x**2, near_zero),
    "log near 0": (lambda x: np.log(x), lambda dy, x: dy / x, near_zero_positive),
    "sqrt near 0": (lambda x: np.sqrt(x), lambda dy, x: dy * 0.5 / np.sqrt(x), near_zero_positive),
    "arcsin near +-1": (lambda x: np.arcsin(x), lambda dy, x: dy / np.sqrt(1 - x * x), near_one),
    "sin far out": (lambda x: np.sin(x), lambda dy, x: dy * np.cos(x), large),
    "sort of close values": (lambda x: np.sort(x, axis=-1), sort_vjp, ties),
}
SIZE = 3  # points per check


def run(dtype: np.dtype, checks: int, seed: int) -> dict[str, Counter]:
    rng = np.random.default_rng(seed)
    per = max(1, checks // len(FAMILIES))
    out: dict[str, Counter] = {}
    for name, (forward, vjp, draw) in FAMILIES.items():
        c: Counter = Counter()
        for i in range(per):
            x = draw(rng, SIZE, dtype).astype(dtype)
            for label, scale in (("right", 1.0), ("flip", -1.0), ("double", 2.0)):
                def formula(dy, x, s=scale, vjp=vjp):
                    return s * vjp(dy, x)
                r = gc.check_vjp(forward, formula, {"x": x}, "x", dtype=dtype, batched=True,
                                 seed=i)
                c[label, r.status] += 1
                if label == "right":
                    c["evaluations"] += r.evaluations
                    c["elements"] += r.nonsmooth
        out[name] = c
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=5600, help="checks per dtype")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cols = ("right fail", "right error", "right nonsmooth", "wrong pass", "wrong nonsmooth",
            "wrong error", "evals/check")
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        start = time.perf_counter()
        res = run(dtype, args.checks, args.seed)
        print(f"\n{dtype.name}: {args.checks // len(FAMILIES)} checks per family, {SIZE} "
              "points each; wrong = sign flip and x2 (two checks per point set)")
        print(f"{'family':<22}" + "".join(f"{c:>16}" for c in cols))
        total: Counter = Counter()
        for name, c in res.items():
            total.update(c)
            n = sum(v for (k, v) in c.items() if isinstance(k, tuple) and k[0] == "right")
            row = (c["right", "fail"], c["right", "error"], c["right", "nonsmooth"],
                   c["flip", "pass"] + c["double", "pass"],
                   c["flip", "nonsmooth"] + c["double", "nonsmooth"],
                   c["flip", "error"] + c["double", "error"], f"{c['evaluations'] / n:.1f}")
            print(f"{name:<22}" + "".join(f"{v:>16}" for v in row))
        n = sum(v for (k, v) in total.items() if isinstance(k, tuple) and k[0] == "right")
        print(f"total {n} correct checks: fail {total['right', 'fail']}, error "
              f"{total['right', 'error']}, nonsmooth {total['right', 'nonsmooth']} "
              f"({100 * total['right', 'nonsmooth'] / n:.2f} % not resolved; "
              f"{total['elements']} of {n * SIZE} elements); wrong formulas passed "
              f"{total['flip', 'pass'] + total['double', 'pass']} of {2 * n}; "
              f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
