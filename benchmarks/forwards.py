"""What the catalogue's forwards cost per evaluation, and what a drop-in max-pool would save.

Exhaustive checking costs 2n evaluations of the forward, so a forward's cost per batched
row bounds every ratio in bench.py. The catalogue's forwards are written for identical
rounding with and without a batch axis; this script measures them per row and checks that
one faster max-pool forward (the max over the M*N strided taps with ``np.maximum``, exact
like any max) gives bit-for-bit the same outputs, batched and not, then times gradcheck's
exhaustive check of the medium max-pool case with each forward.

    python benchmarks/forwards.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from derivations import conv2d, linear, maxpool2d, softmax_ce  # noqa: E402
from gradcheck.check import check_vjp  # noqa: E402


def maxpool_taps(x: np.ndarray, M: int, N: int, s: int) -> np.ndarray:
    """y (C, Ho, Wo) as the running maximum of the M*N strided taps (a leading batch axis
    on x is carried to y); max is exact, so this equals the catalogue's forward bit for bit."""
    Ho, Wo = (x.shape[-2] - M) // s + 1, (x.shape[-1] - N) // s + 1
    y = None
    for m in range(M):
        for n in range(N):
            tap = x[..., m : m + (Ho - 1) * s + 1 : s, n : n + (Wo - 1) * s + 1 : s]
            y = tap.copy() if y is None else np.maximum(y, tap, out=y)
    assert y is not None
    return y


def per_row(forward: Any, case: dict[str, Any], wrt: str, rows: int = 32) -> float:
    X = np.broadcast_to(case[wrt], (rows, *case[wrt].shape)).copy()
    forward(**{**case, wrt: X})
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        forward(**{**case, wrt: X})
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / rows


def identical(rng: np.random.Generator) -> bool:
    for C, H, W, M, N, s in [(1, 5, 7, 2, 3, 1), (3, 8, 8, 2, 2, 2), (2, 9, 6, 3, 2, 2),
                             (16, 32, 32, 2, 2, 2), (2, 7, 7, 3, 3, 3)]:
        x = (rng.permutation(C * H * W) * 1.25 + rng.uniform(0, 0.125, C * H * W)).reshape(
            C, H, W)
        X = np.stack([x, -x, x * 3.5])
        for arr in (x, X):
            if not np.array_equal(maxpool2d.forward(arr, M, N, s), maxpool_taps(arr, M, N, s)):
                return False
    return True


def main() -> None:
    rng = np.random.default_rng(0)
    cases = [
        ("softmax CE, 1000 classes", softmax_ce.forward,
         {"y": rng.standard_normal(1000), "gt": 3}, "y"),
        ("linear 64x128, W", linear.forward, {"W": rng.standard_normal((64, 128)),
         "x": rng.standard_normal(128), "b": rng.standard_normal(64)}, "W"),
        ("conv 3x32x32, 8 filters 3x3, stride 1, x", conv2d.forward,
         {"x": rng.standard_normal((3, 32, 32)), "W": rng.standard_normal((8, 3, 3, 3)),
          "b": rng.standard_normal(8), "s": 1}, "x"),
    ]
    x = (rng.permutation(16 * 32 * 32) * 1.25 + rng.uniform(0, 0.125, 16 * 32 * 32)).reshape(
        16, 32, 32)
    pool = {"x": x, "M": 2, "N": 2, "s": 2}
    cases += [("max-pool 16x32x32 (catalogue)", maxpool2d.forward, pool, "x"),
              ("max-pool 16x32x32 (taps)", maxpool_taps, pool, "x")]
    print("| forward | per batched row | 2n rows |\n|---|---|---|")
    for label, fwd, case, wrt in cases:
        t = per_row(fwd, case, wrt)
        print(f"| {label} | {t * 1e6:.1f} us | {t * 2 * case[wrt].size:.2f} s |")
    print(f"\nmax-pool taps forward bit-identical to the catalogue's: {identical(rng)}")
    for label, fwd in (("catalogue", maxpool2d.forward), ("taps", maxpool_taps)):
        t0 = time.perf_counter()
        r = check_vjp(fwd, maxpool2d.dx_reference, pool, "x", mode="exhaustive", batched=True)
        print(f"gradcheck exhaustive, max-pool 16x32x32 with the {label} forward: "
              f"{time.perf_counter() - t0:.2f} s ({r.status}, {r.evaluations} evaluations)")


if __name__ == "__main__":
    main()
