"""The benchmark cases: one derivation of the catalogue at one size, with torch's and jax's
versions of the same forward (built only when those libraries are installed).

Sizes: small, medium and large as before; "target" the issue-17 sizes (conv 3x32x32 with 8
filters, max-pool 8x32x32); "real" a conv layer's input at a real size (16x64x64, 16
filters), checked by structured exhaustive mode only (plain exhaustive takes minutes).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradcheck.declare import Derivation, load_derivations  # noqa: E402


@functools.cache
def derivation(name: str) -> Derivation:
    return load_derivations(f"derivations.{name}")[0]


@functools.cache
def reference(name: str, wrt: str) -> Callable[..., Any]:
    return next(f.vjp for f in derivation(name).formulas
                if f.wrt == wrt and f.variant == "reference")


@dataclass
class Case:
    name: str  # derivation
    size: str  # small / medium / large / target / real
    label: str
    args: dict[str, Any]
    wrts: list[str]
    torch_fn: Callable[..., Any] | None = None  # f(*tensors for wrts) -> tensor
    jax_fn: Callable[..., Any] | None = None  # f(*arrays for wrts) -> array
    times: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    evaluations: dict[str, int] = field(default_factory=dict)  # gradcheck's, per method
    modes: dict[str, list[str]] = field(default_factory=dict)  # modes auto chose, per input

    @property
    def n(self) -> int:
        return sum(self.args[w].size for w in self.wrts)


def _softmax(n: int, rng: np.random.Generator) -> Case:
    gt, y = 3 % n, rng.standard_normal(n) * 3
    return Case("softmax_ce", "", f"softmax CE, {n} classes", {"y": y, "gt": gt}, ["y"],
                lambda y: _F().cross_entropy(y, _torch().tensor(gt)),
                lambda y: -_jax().nn.log_softmax(y)[gt])


def _linear(m: int, n: int, rng: np.random.Generator) -> Case:
    args = {"W": rng.standard_normal((m, n)), "x": rng.standard_normal(n),
            "b": rng.standard_normal(m)}
    return Case("linear", "", f"linear {m}x{n}", args, ["W", "x", "b"],
                lambda W, x, b: _F().linear(x, W, b), lambda W, x, b: W @ x + b)


def _conv(c: int, hw: int, k: int, s: int, rng: np.random.Generator,
          wrts: tuple[str, ...] = ("x", "W", "b")) -> Case:
    args = {"x": rng.standard_normal((c, hw, hw)), "W": rng.standard_normal((k, c, 3, 3)),
            "b": rng.standard_normal(k), "s": s}
    fixed = {w: args[w] for w in ("x", "W", "b") if w not in wrts}

    def t(*xs: Any) -> Any:
        kw = {w: _torch().tensor(v) for w, v in fixed.items()}
        kw.update(zip(wrts, xs, strict=True))
        return _F().conv2d(kw["x"], kw["W"], kw["b"], stride=s)

    def j(*xs: Any) -> Any:
        kw = {**fixed, **dict(zip(wrts, xs, strict=True))}
        lax = _jax().lax
        return lax.conv_general_dilated(kw["x"][None], kw["W"], (s, s), "VALID")[0] \
            + kw["b"][:, None, None]

    label = f"conv {c}x{hw}x{hw}, {k} filters 3x3, stride {s}"
    return Case("conv2d", "", label, args, list(wrts), t, j)


def _pool(c: int, hw: int, rng: np.random.Generator) -> Case:
    # values pairwise >= 1 apart (as the catalogue draws them): no ties within a step
    x = (rng.permutation(c * hw * hw) * 1.25 + rng.uniform(0, 0.125, c * hw * hw)).reshape(
        c, hw, hw)

    def j(x: Any) -> Any:
        lax, jnp = _jax().lax, _jax().numpy
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2), (1, 2, 2), "VALID")

    return Case("maxpool2d", "", f"max-pool {c}x{hw}x{hw}, 2x2, stride 2",
                {"x": x, "M": 2, "N": 2, "s": 2}, ["x"],
                lambda x: _F().max_pool2d(x, (2, 2), stride=2), j)


def table(sizes: list[str]) -> list[Case]:
    rng = np.random.default_rng(0)
    every = {
        "small": [_softmax(10, rng), _linear(16, 32, rng), _conv(3, 8, 4, 2, rng),
                  _pool(4, 8, rng)],
        "medium": [_softmax(1000, rng), _linear(64, 128, rng), _conv(3, 32, 8, 1, rng),
                   _pool(16, 32, rng)],
        "target": [_conv(3, 32, 8, 1, rng, ("x",)), _pool(8, 32, rng)],
        "large": [_softmax(100_000, rng), _linear(256, 512, rng), _conv(16, 128, 16, 1, rng),
                  _pool(64, 256, rng)],
        "real": [_conv(16, 64, 16, 1, rng, ("x",))],
    }
    out = []
    for size in sizes:
        for c in every[size]:
            c.size = size
            out.append(c)
    return out


def _torch() -> Any:
    import torch

    return torch


def _F() -> Any:
    import torch.nn.functional as F

    return F


def _jax() -> Any:
    import jax

    return jax
