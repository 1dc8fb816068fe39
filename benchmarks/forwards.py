"""Why the catalogue's forwards are written the way they are: cost per batched row, and
whether a batched row rounds exactly like a single call, for each way of writing them.

Exhaustive checking costs 2n evaluations of the forward, so its cost per batched row bounds
every ratio in bench.py; and the engine compares L from different batched calls, so a row
must not round differently with the batch it is in. This script times, at the medium sizes
of bench.py, the catalogue's linear and conv forwards (one BLAS product per batched row)
beside the exact-order sums they replaced and a single product over the whole batch, and
checks each for bit-identical rows over batches of 1 to 64 rows.

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

from derivations import conv2d, linear  # noqa: E402


def linear_sums(W: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The products W_ij x_j summed along the last axis (the exact-order forward)."""
    return (W * x[..., None, :]).sum(axis=-1) + b


def linear_einsum(W: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One einsum over the whole batch."""
    return np.einsum("...ij,...j->...i", W, x) + b


def linear_one_product(W: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (rows, n) times W^T in one BLAS product over the whole batch."""
    return x @ np.swapaxes(W, -1, -2) + b


def conv_taps(x: np.ndarray, W: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    """b + the kernel taps accumulated in a fixed order (the exact-order forward)."""
    _, T, M, N = W.shape[-4:]
    Ho, Wo = (x.shape[-2] - M) // s + 1, (x.shape[-1] - N) // s + 1
    y = b[..., :, None, None] + np.zeros((Ho, Wo))
    for t in range(T):
        for m in range(M):
            for n in range(N):
                patch = x[..., t, m : m + (Ho - 1) * s + 1 : s, n : n + (Wo - 1) * s + 1 : s]
                y = y + patch[..., None, :, :] * W[..., :, t, m, n, None, None]
    return y


def conv_einsum(x: np.ndarray, W: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    """One einsum of the filters with the strided windows, over the whole batch."""
    M, N = W.shape[-2:]
    return np.einsum("...tijmn,...ktmn->...kij", conv2d._windows(x, M, N, s), W) + \
        b[..., :, None, None]


def per_row(forward: Any, case: dict[str, Any], wrt: str, rows: int = 32) -> float:
    X = np.broadcast_to(case[wrt], (rows, *case[wrt].shape)).copy()
    forward(**{**case, wrt: X})
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        forward(**{**case, wrt: X})
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / rows


def identical(forward: Any, case: dict[str, Any], rng: np.random.Generator) -> bool:
    """Every float argument batched in turn, 1 to 64 rows: rows equal single calls?"""
    for wrt in (k for k, v in case.items() if isinstance(v, np.ndarray)):
        for rows in (1, 2, 5, 17, 29, 64):
            copies = [case[wrt] + rng.standard_normal(case[wrt].shape) for _ in range(rows)]
            batched = forward(**{**case, wrt: np.stack(copies)})
            single = np.stack([forward(**{**case, wrt: c}) for c in copies])
            if not np.array_equal(batched, single):
                return False
    return True


def main() -> None:
    rng = np.random.default_rng(0)
    lin = {"W": rng.standard_normal((64, 128)), "x": rng.standard_normal(128),
           "b": rng.standard_normal(64)}
    conv = {"x": rng.standard_normal((3, 32, 32)), "W": rng.standard_normal((8, 3, 3, 3)),
            "b": rng.standard_normal(8), "s": 1}
    rows = [
        ("linear 64x128, W", "catalogue (matmul per row)", linear.forward, lin, "W"),
        ("linear 64x128, W", "exact-order sums", linear_sums, lin, "W"),
        ("linear 64x128, W", "one einsum", linear_einsum, lin, "W"),
        ("linear 64x128, x", "catalogue (matmul per row)", linear.forward, lin, "x"),
        ("linear 64x128, x", "one product over the batch", linear_one_product, lin, "x"),
        ("conv 3x32x32, 8 filters 3x3, x", "catalogue (im2col, matmul per row)",
         conv2d.forward, conv, "x"),
        ("conv 3x32x32, 8 filters 3x3, x", "exact-order taps", conv_taps, conv, "x"),
        ("conv 3x32x32, 8 filters 3x3, x", "one einsum", conv_einsum, conv, "x"),
    ]
    print("| case | forward | per batched row | 2n rows | rows = single calls |")
    print("|---|---|---|---|---|")
    for label, how, fwd, case, wrt in rows:
        t = per_row(fwd, case, wrt)
        same = identical(fwd, case, rng)
        print(f"| {label} | {how} | {t * 1e6:.1f} us | {t * 2 * case[wrt].size * 1e3:.1f} ms | "
              f"{'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
