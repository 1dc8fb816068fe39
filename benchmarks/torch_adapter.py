"""gradcheck's torch adapter against torch.autograd.gradcheck on the same Functions.

Run from the checkout::

    python benchmarks/torch_adapter.py            # timings and the mutant table (~3-5 min)
    python benchmarks/torch_adapter.py --quick    # small sizes, one round

Part 1, timings: one check of every input of a Function at one case, per method, timed
interleaved (round-robin) and reported as medians: gradcheck exhaustive one call per
perturbation (``batched=False``), gradcheck exhaustive through torch.vmap (the Function's
``generate_vmap_rule``), gradcheck directional (2 random directions per input, then
bisection only on disagreement), torch.autograd.gradcheck slow mode (full Jacobian) and fast
mode (one projection). torch runs on one thread (the default is erratic on this 2-core
machine) for every method alike.

Part 2, the mutant table: the planted bugs of tests/fixtures/torch_layers.py, gradcheck's
verdict over generated cases (100 examples) beside torch.autograd.gradcheck's at its one
typical case, slow and fast, and jax.test_util.check_grads on the same bugs written as
custom_vjp rules (tests/fixtures/jax_rules.py) when jax is installed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradcheck import Derivation, check_vjp  # noqa: E402
from gradcheck.runner import Settings, run_formula  # noqa: E402
from tests.fixtures import torch_layers as layers  # noqa: E402


def cases(quick: bool) -> list[tuple[str, Any, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    sizes = [(4, 16)] if quick else [(4, 16), (32, 64)]
    out = []
    for rows, width in sizes:
        x = rng.standard_normal((rows, width))
        out.append((f"layer norm {rows}x{width}", layers.LayerNorm,
                    {"x": x, "gamma": 1 + rng.random(width), "beta": rng.standard_normal(width)}))
        out.append((f"gelu {rows}x{width}", layers.GELU, {"x": x}))
        out.append((f"linear {rows}x{width}->{width}", layers.Linear,
                    {"x": x, "W": rng.standard_normal((width, width)) / 8,
                     "b": rng.standard_normal(width)}))
    return out


def methods(fn: Any, case: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
    plain = Derivation.from_torch("b", fn, cases=None, batched=False)
    out: dict[str, Callable[[], Any]] = {}

    def ours(d: Derivation, mode: str, batched: bool) -> Callable[[], Any]:
        def run() -> None:
            for f in d.formulas:
                r = check_vjp(d.forward, f.vjp, case, f.wrt, mode=mode, batched=batched)
                assert r.status == "pass", (f.id, r.status, r.message)
        return run

    out["exhaustive"] = ours(plain, "exhaustive", False)
    vmapped = Derivation.from_torch("b", fn, cases=None)
    if vmapped.batched:
        out["exhaustive vmap"] = ours(vmapped, "exhaustive", True)
    out["directional"] = ours(vmapped, "directional", vmapped.batched)
    names = [n for n in case if isinstance(case[n], np.ndarray)]
    args = [torch.tensor(case[n], requires_grad=True) for n in names]

    def theirs(fast: bool) -> Callable[[], Any]:
        return lambda: torch.autograd.gradcheck(fn.apply, args, fast_mode=fast)

    out["torch slow"], out["torch fast"] = theirs(False), theirs(True)
    return out


def timings(quick: bool) -> None:
    rounds = 1 if quick else 5
    torch.set_num_threads(1)
    cols = ["exhaustive", "exhaustive vmap", "directional", "torch slow", "torch fast"]
    print(f"{'case':<24}{'n':>6}" + "".join(f"{c:>17}" for c in cols)
          + f"{'slow/exh':>10}{'slow/vmap':>10}{'dir/fast':>10}")
    for label, fn, case in cases(quick):
        ms = methods(fn, case)
        for m in ms.values():  # warm up: first calls pay torch's and numpy's one-off costs
            m()
        times: dict[str, list[float]] = {k: [] for k in ms}
        for _ in range(rounds):
            for k, m in ms.items():
                t0 = time.perf_counter()
                m()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        n = sum(v.size for v in case.values())

        print(f"{label:<24}{n:>6}" + "".join(_ms(med, c) for c in cols)
              + _ratio(med, "torch slow", "exhaustive")
              + _ratio(med, "torch slow", "exhaustive vmap")
              + _ratio(med, "directional", "torch fast"), flush=True)


def _ms(med: dict[str, float], k: str) -> str:
    return f"{med[k] * 1e3:>14.2f} ms" if k in med else f"{'-':>17}"


def _ratio(med: dict[str, float], a: str, b: str) -> str:
    return f"{med[a] / med[b]:>9.1f}x" if a in med and b in med else f"{'-':>10}"


MUTANTS = [
    ("linear_sign", "W", "sign"), ("linear_scale", "b", "scale"),
    ("layer_norm_no_mean", "x", "missing term"), ("gate_swapped", "x", "wrong input order"),
    ("max_pool_assign", "x", "stride-dependent pooling"),
    ("batch_norm_no_xhat", "x", "batch norm, gamma 1e-6"),
]


def mutant_table(quick: bool) -> None:
    try:
        from tests.fixtures import jax_rules as rules
    except ImportError:
        rules = None
    settings = Settings(examples=30 if quick else 100)
    print(f"\n{'bug':<26}{'gradcheck (cases, counterexample)':<44}{'torch slow':>11}"
          f"{'torch fast':>11}{'gradcheck jax':>14}{'check_grads':>12}")
    for name, wrt, kind in MUTANTS:
        f = next(f for f in getattr(layers, name).formulas if f.wrt == wrt)
        r = run_formula(f, settings)
        shapes = " ".join(f"{k}{'x'.join(map(str, v))}" for k, v in
                          (r.counterexample or {}).get("shapes", {}).items())
        params = " ".join(f"{k}={v}" for k, v in (r.counterexample or {}).get("params", {})
                          .items())
        ours = f"{r.status} ({r.cases}, {shapes} {params})".strip()
        jax_ours = jax_theirs = "-"
        if rules is not None:
            jf = next(f for f in getattr(rules, f"d_{name}").formulas if f.wrt == wrt)
            jax_ours = run_formula(jf, settings).status
            jax_theirs = rules.jax_check_grads(name)
        print(f"{kind:<26}{ours:<44}{layers.torch_gradcheck(name):>11}"
              f"{layers.torch_gradcheck(name, fast_mode=True):>11}{jax_ours:>14}"
              f"{jax_theirs:>12}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    quick = parser.parse_args().quick
    print(f"torch {torch.__version__}, numpy {np.__version__}, float64, CPU, 1 torch thread")
    timings(quick)
    mutant_table(quick)


if __name__ == "__main__":
    main()
