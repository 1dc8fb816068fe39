"""gradcheck against torch.autograd.gradcheck (and jax's check_grads), side by side.

    python benchmarks/bench.py                     # every size (torch slow mode: minutes)
    python benchmarks/bench.py --sizes target real # the issue-17 targets only
    python benchmarks/bench.py --quick             # small cases, no torch/jax needed
    python benchmarks/memory.py                    # peak memory and the CLI, fresh processes

The cases are in ``cases.py``. Every method checks every float input of a case; methods are
warmed up once, then timed round-robin (interleaved), medians reported. Ratios come from
one run, side by side. See benchmarks/README.md.
"""

from __future__ import annotations

import os

# One BLAS thread for numpy, as for torch (the targets are one-thread figures; on
# this shared 2-core machine OpenBLAS's second thread made the real-size check 4-7x
# slower in wall time). Set before numpy loads; override from the environment.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from cases import Case, derivation, reference, table  # noqa: E402

from gradcheck.check import check_vjp  # noqa: E402
from gradcheck.numeric import Loss, steps  # noqa: E402

try:
    import torch
except ImportError:
    torch = None
try:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.test_util import check_grads
except ImportError:
    jax = None

BATCH_SECONDS = 0.02  # calls shorter than this are repeated back to back (timeit-style)


def gradcheck(c: Case, key: str, mode: str, structured: bool, dtype: Any = None) -> None:
    d = derivation(c.name)
    evaluations, modes = 0, []
    for w in c.wrts:
        r = check_vjp(d.forward, reference(c.name, w), c.args, w, mode=mode, dtype=dtype,
                      batched=d.batched, structure=d.structure.get(w) if structured else None)
        if r.status != "pass":
            raise RuntimeError(f"gradcheck {key} {c.label} d{w}: {r.status}\n{r.explain()}")
        evaluations += r.evaluations
        modes.append(r.mode)
    c.evaluations[key], c.modes[key] = evaluations, modes


def bare(c: Case) -> None:
    """The plain 2n central differences through the engine's own Loss (its chunking, its
    reduction of each row): no noise estimate, no validation, no verdict."""
    d = derivation(c.name)
    for w in c.wrts:
        x = c.args[w]
        g = np.random.default_rng(0).standard_normal(np.shape(d.forward(**c.args)))
        loss = Loss(d.forward, c.args, w, g, batched=d.batched)
        h, n = steps(x).reshape(-1), x.size
        xf = x.reshape(-1)
        L = loss.at_elements(np.concatenate([np.arange(n)] * 2), np.concatenate([xf + h, xf - h]))
        _ = (L[:n] - L[n:]) / (2 * h)


def torch_check(c: Case, fast: bool) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the default 2 is erratic on a shared machine
    try:
        inputs = tuple(torch.tensor(c.args[w], dtype=torch.float64, requires_grad=True)
                       for w in c.wrts)
        if not torch.autograd.gradcheck(c.torch_fn, inputs, fast_mode=fast):
            raise RuntimeError(f"torch gradcheck failed on {c.label}")
    finally:
        torch.set_num_threads(threads)


def methods(use_torch: bool, use_jax: bool) -> dict[str, Callable[[Case], None]]:
    m: dict[str, Callable[[Case], None]] = {
        "gc_auto": lambda c: gradcheck(c, "gc_auto", "auto", True),
        "gc_exhaustive": lambda c: gradcheck(c, "gc_exhaustive", "exhaustive", False),
        "gc_directional": lambda c: gradcheck(c, "gc_directional", "directional", False),
        "bare_2n": bare,
    }
    if use_torch:
        m["torch_slow"] = lambda c: torch_check(c, False)
        m["torch_fast"] = lambda c: torch_check(c, True)
    if use_jax:
        m["jax"] = lambda c: check_grads(c.jax_fn, tuple(jnp.asarray(c.args[w]) for w in c.wrts),
                                         order=1, modes=("rev",))
    return m


SKIP = {  # method -> sizes where one call is known to take minutes (estimated instead)
    "gc_exhaustive": ("large", "real"), "bare_2n": ("large", "real"),
    "torch_slow": ("large", "real"),
}


def time_case(c: Case, ms: dict[str, Callable[[Case], None]], repeats: int) -> None:
    """Warm every method up once, then time them round-robin; a method whose call takes
    over 1 s gets 3 rounds, over 10 s one."""
    rounds, first = {}, {}
    for key, fn in ms.items():
        if c.size in SKIP.get(key, ()):
            c.notes[key] = "not run at this size (minutes per call)"
            continue
        t0 = time.perf_counter()
        fn(c)
        first[key] = time.perf_counter() - t0
        rounds[key] = repeats if first[key] < 1 else min(repeats, 3) if first[key] < 10 else 1
        c.times[key] = []
    for r in range(repeats):
        for key, fn in ms.items():
            if r < rounds.get(key, 0):
                calls = max(1, min(100, int(BATCH_SECONDS / max(first[key], 1e-6))))
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn(c)
                c.times[key].append((time.perf_counter() - t0) / calls)


def median(c: Case, key: str) -> float | None:
    return statistics.median(c.times[key]) if c.times.get(key) else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def fmt(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1e6:.3g} us" if t < 1e-3 else f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


COLUMNS = ["gc_auto", "gc_exhaustive", "gc_directional", "bare_2n", "torch_slow",
           "torch_fast", "jax"]


def render(cs: list[Case], keys: list[str]) -> str:
    cols = [k for k in COLUMNS if k in keys]
    head = ["case", "n", *cols, "auto evals", "auto mode", "slow/auto", "slow/exh", "exh/bare"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cs:
        slow = median(c, "torch_slow")
        cells = [f"{c.size}: {c.label}", str(c.n), *(fmt(median(c, k)) for k in cols),
                 str(c.evaluations.get("gc_auto", "-")),
                 "/".join(sorted(set(c.modes.get("gc_auto", [])))) or "-"]
        for num, den in ((slow, median(c, "gc_auto")), (slow, median(c, "gc_exhaustive")),
                         (median(c, "gc_exhaustive"), median(c, "bare_2n"))):
            r = ratio(num, den)
            cells.append("-" if r is None else f"{r:.3g}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def real_size(c: Case, repeats: int) -> dict[str, Any]:
    """At the real size, float64 and float32: wall and CPU time (the process's, over its
    threads) of a structured check of the reference, and whether one wrong element
    (zeroed, or 1 % off) is caught and localised. The element is the one of median |dx|
    (a smaller gradient's 1 % can fall inside float32's noise tolerance: see the README)."""
    d, w = derivation(c.name), c.wrts[0]
    out: dict[str, Any] = {}
    for dtype in (np.float64, np.float32):
        key = f"gc_auto_{np.dtype(dtype).name}"
        seconds, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            r = check_vjp(d.forward, reference(c.name, w), c.args, w, dtype=dtype,
                          batched=True, structure=d.structure[w])
            seconds.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        a = np.abs(r.analytic)
        index = tuple(int(i) for i in np.unravel_index(np.argsort(a.ravel())[a.size // 2],
                                                       a.shape))
        found = {}
        for how, change in (("zeroed", 0.0), ("1% off", 1.01)):
            def vjp(dy: Any, change: float = change, at: tuple[int, ...] = index,
                    **kw: Any) -> Any:
                dx = reference(c.name, w)(dy, **kw)
                dx[at] *= change
                return dx
            bad = check_vjp(d.forward, vjp, c.args, w, dtype=dtype, batched=True,
                            structure=d.structure[w])
            found[how] = {"status": bad.status, "mismatches": bad.mismatches,
                          "worst_index": bad.worst_index, "localised": bad.worst_index == index}
        out[key] = {"status": r.status, "mode": r.mode, "evaluations": r.evaluations,
                    "median_seconds": statistics.median(seconds), "seconds": seconds,
                    "median_cpu_seconds": statistics.median(cpu),
                    "element": index, "wrong_element": found}
    return out


def torch_forward(c: Case) -> float:
    """Seconds per call of torch's forward (one thread), median of 5."""
    inputs = tuple(torch.tensor(c.args[w], dtype=torch.float64) for w in c.wrts)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        c.torch_fn(*inputs)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            c.torch_fn(*inputs)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


def estimate_slow(measured: Case, target: Case) -> float:
    """torch slow mode at ``target``'s size, estimated from its time at ``measured``'s:
    its 2n forward evaluations dominate, so it scales as n x the cost of one forward."""
    slow = median(measured, "torch_slow")
    if slow is None:
        return float("nan")
    return slow * (target.n * torch_forward(target)) / (measured.n * torch_forward(measured))


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "numpy": np.__version__,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "torch": torch.__version__ if torch else None,
            "jax": jax.__version__ if jax else None, "cpus": os.cpu_count()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["small", "medium", "target", "large", "real"],
                   choices=["small", "medium", "target", "large", "real"])
    p.add_argument("--quick", action="store_true", help="small cases, 3 rounds, no torch/jax")
    p.add_argument("--repeats", type=int, default=None, help="rounds per method (default 5)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-jax", action="store_true")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results.json")
    a = p.parse_args()
    sizes, repeats = (["small"], 3) if a.quick else (a.sizes, a.repeats or 5)
    ms = methods(torch is not None and not a.no_torch and not a.quick,
                 jax is not None and not a.no_jax and not a.quick)
    cs = table(sizes)
    real: dict[str, Any] = {}
    for c in cs:
        print(f"timing {c.size}: {c.label} (n={c.n}) ...", flush=True)
        time_case(c, ms, repeats)
        if c.size == "real":
            real[c.label] = real_size(c, repeats)
    convs = {c.size: c for c in cs if c.name == "conv2d" and c.wrts == ["x"]}
    if "torch_slow" in ms and {"target", "real"} <= set(convs):
        estimate = estimate_slow(convs["target"], convs["real"])
        auto = median(convs["real"], "gc_auto")
        convs["real"].notes["torch_slow"] = (
            f"estimated {estimate:.0f} s (from the 3x32x32 conv: n x torch forward cost), "
            f"{estimate / auto:.0f}x gc auto" if auto else f"estimated {estimate:.0f} s")
    print("\n" + render(cs, list(ms)))
    for c in cs:
        for key, note in c.notes.items():
            print(f"  {c.size} {c.label}: {key}: {note}")
    for label, runs in real.items():
        for key, r in runs.items():
            caught = ", ".join(f"{how}: {f['status']}, {f['mismatches']} mismatch(es), "
                               f"localised {f['localised']}"
                               for how, f in r["wrong_element"].items())
            print(f"real {label} {key}: {r['status']} ({r['mode']}, {r['evaluations']} "
                  f"evaluations) in {fmt(r['median_seconds'])} wall, "
                  f"{fmt(r['median_cpu_seconds'])} CPU; element {r['element']}: {caught}")
    result = {"environment": environment(), "repeats": repeats, "real": real,
              "cases": [{"derivation": c.name, "size": c.size, "label": c.label, "n": c.n,
                         "wrt": c.wrts, "median_seconds": {k: median(c, k) for k in c.times},
                         "seconds": c.times, "notes": c.notes, "evaluations": c.evaluations,
                         "modes": c.modes} for c in cs]}
    a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
