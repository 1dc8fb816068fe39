"""gradcheck against torch.autograd.gradcheck and jax.test_util.check_grads, side by side.

Run from the checkout (``derivations/`` must be importable)::

    python benchmarks/bench.py            # the full run (several minutes: torch's slow mode)
    python benchmarks/bench.py --quick    # smoke run: small cases, few repeats, no torch/jax needed

For each bundled derivation at small, medium and large sizes, every method checks the
gradient with respect to every float input of the case (the catalogue's reference formulas
for gradcheck; torch and jax differentiate their own forwards). Methods are timed
interleaved (round-robin within a case) and reported as medians. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradcheck.check import check_vjp  # noqa: E402
from gradcheck.declare import load_derivations  # noqa: E402
from gradcheck.numeric import CACHE_BYTES, DEFAULT_BUDGET, steps  # noqa: E402

# Optional; not imported by the memory child, whose peak RSS must be the engine's alone.
MEMORY_CHILD = "--memory-child" in sys.argv
try:
    if MEMORY_CHILD:
        raise ImportError
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None
try:
    if MEMORY_CHILD:
        raise ImportError
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax
    from jax.test_util import check_grads
except ImportError:
    jax = None


@functools.cache
def derivation(name: str) -> Any:
    return load_derivations(f"derivations.{name}")[0]


@dataclass
class Case:
    name: str  # derivation
    size: str  # small / medium / large
    label: str
    args: dict[str, Any]
    wrts: list[str]
    torch_fn: Callable[..., Any] | None = None  # f(*tensors for wrts) -> tensor
    jax_fn: Callable[..., Any] | None = None  # f(*arrays for wrts) -> array
    times: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    evaluations: dict[str, int] = field(default_factory=dict)  # gradcheck's, per mode
    forward_cost: dict[str, float] = field(default_factory=dict)  # seconds per evaluation

    @property
    def n(self) -> int:
        return sum(self.args[w].size for w in self.wrts)


def _softmax(n: int, rng: np.random.Generator) -> Case:
    gt = 3 % n
    y = rng.standard_normal(n) * 3

    def t(y: Any) -> Any:
        return F.cross_entropy(y, torch.tensor(gt))

    def j(y: Any) -> Any:
        return -jax.nn.log_softmax(y)[gt]

    return Case("softmax_ce", "", f"softmax CE, {n} classes", {"y": y, "gt": gt}, ["y"], t, j)


def _linear(m: int, n: int, rng: np.random.Generator) -> Case:
    args = {"W": rng.standard_normal((m, n)), "x": rng.standard_normal(n),
            "b": rng.standard_normal(m)}

    def t(W: Any, x: Any, b: Any) -> Any:
        return F.linear(x, W, b)

    def j(W: Any, x: Any, b: Any) -> Any:
        return W @ x + b

    return Case("linear", "", f"linear {m}x{n}", args, ["W", "x", "b"], t, j)


def _conv(c: int, hw: int, k: int, s: int, rng: np.random.Generator) -> Case:
    args = {"x": rng.standard_normal((c, hw, hw)), "W": rng.standard_normal((k, c, 3, 3)),
            "b": rng.standard_normal(k), "s": s}

    def t(x: Any, W: Any, b: Any) -> Any:
        return F.conv2d(x, W, b, stride=s)

    def j(x: Any, W: Any, b: Any) -> Any:
        y = lax.conv_general_dilated(x[None], W, (s, s), "VALID")[0]
        return y + b[:, None, None]

    label = f"conv {c}x{hw}x{hw}, {k} filters 3x3, stride {s}"
    return Case("conv2d", "", label, args, ["x", "W", "b"], t, j)


def _pool(c: int, hw: int, rng: np.random.Generator) -> Case:
    # values pairwise >= 1 apart (as the catalogue draws them): no ties within a step
    x = (rng.permutation(c * hw * hw) * 1.25 + rng.uniform(0, 0.125, c * hw * hw)).reshape(
        c, hw, hw)

    def t(x: Any) -> Any:
        return F.max_pool2d(x, (2, 2), stride=2)

    def j(x: Any) -> Any:
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2), (1, 2, 2), "VALID")

    return Case("maxpool2d", "", f"max-pool {c}x{hw}x{hw}, 2x2, stride 2",
                {"x": x, "M": 2, "N": 2, "s": 2}, ["x"], t, j)


def cases(quick: bool) -> list[Case]:
    rng = np.random.default_rng(0)
    table = {
        "small": [_softmax(10, rng), _linear(16, 32, rng), _conv(3, 8, 4, 2, rng),
                  _pool(4, 8, rng)],
        "medium": [_softmax(1000, rng), _linear(64, 128, rng), _conv(3, 32, 8, 1, rng),
                   _pool(16, 32, rng)],
        "large": [_softmax(100_000, rng), _linear(256, 512, rng), _conv(16, 128, 16, 1, rng),
                  _pool(64, 256, rng)],
    }
    if quick:
        table = {"small": table["small"]}
    out = []
    for size, group in table.items():
        for c in group:
            c.size = size
            out.append(c)
    return out


# ---------------------------------------------------------------- the methods


@functools.cache
def reference_vjps(name: str) -> dict[str, Callable[..., Any]]:
    return {f.wrt: f.vjp for f in derivation(name).formulas if f.variant == "reference"}


def run_gradcheck(c: Case, mode: str) -> None:
    d, vjps = derivation(c.name), reference_vjps(c.name)
    evaluations = 0
    for w in c.wrts:
        r = check_vjp(d.forward, vjps[w], c.args, w, mode=mode, batched=d.batched)
        if r.status != "pass":
            raise RuntimeError(f"gradcheck {mode} {c.label} d{w}: {r.status}\n{r.explain()}")
        evaluations += r.evaluations
    c.evaluations[mode] = evaluations


def bare_forward(c: Case) -> None:
    """A plain vectorised central difference: the 2n perturbed inputs through the batched
    forward, chunked by the engine's own rule (cache-sized, within the default budget),
    with one reused buffer; no noise estimate, no validation, no verdict."""
    d = derivation(c.name)
    for w in c.wrts:
        x = c.args[w]
        y = d.forward(**c.args)
        g = np.random.default_rng(0).standard_normal(np.shape(y))
        row = x.nbytes + 2 * max(g.nbytes, 8)
        chunk = min(max(1, int(DEFAULT_BUDGET // row)), max(1, CACHE_BYTES // row))
        h = steps(x).reshape(-1)
        n = x.size
        rows = min(chunk, 2 * n)
        buf = np.empty((rows, *x.shape))
        buf[...] = x
        flat, xf = buf.reshape(rows, -1), x.reshape(-1)
        idx = np.concatenate([np.arange(n), np.arange(n)])
        val = np.concatenate([xf + h, xf - h])
        L = np.empty(2 * n)
        for s in range(0, 2 * n, rows):
            i = idx[s:s + rows]
            r = np.arange(i.size)
            flat[r, i] = val[s:s + rows]
            Y = d.forward(**{**c.args, w: buf[: i.size]})
            L[s:s + i.size] = (Y * g).reshape(i.size, -1).sum(axis=1)
            flat[r, i] = xf[i]
        _ = (L[:n] - L[n:]) / (2 * h)


def _torch_inputs(c: Case) -> tuple[Any, ...]:
    return tuple(torch.tensor(c.args[w], dtype=torch.float64, requires_grad=True)
                 for w in c.wrts)


def run_torch(c: Case, fast: bool, threads: int | None) -> None:
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        ok = torch.autograd.gradcheck(c.torch_fn, _torch_inputs(c), fast_mode=fast)
    finally:
        torch.set_num_threads(old)
    if not ok:
        raise RuntimeError(f"torch gradcheck failed on {c.label}")


def run_jax(c: Case) -> None:
    check_grads(c.jax_fn, tuple(jnp.asarray(c.args[w]) for w in c.wrts), order=1,
                modes=("rev",))


def methods(has_torch: bool, has_jax: bool) -> dict[str, Callable[[Case], None]]:
    m: dict[str, Callable[[Case], None]] = {
        "gc_exhaustive": lambda c: run_gradcheck(c, "exhaustive"),
        "gc_directional": lambda c: run_gradcheck(c, "directional"),
        "bare_2n_forward": bare_forward,
    }
    if has_torch:
        m["torch_slow_1t"] = lambda c: run_torch(c, False, 1)
        m["torch_slow"] = lambda c: run_torch(c, False, None)
        m["torch_fast_1t"] = lambda c: run_torch(c, True, 1)
        m["torch_fast"] = lambda c: run_torch(c, True, None)
    if has_jax:
        m["jax_check_grads"] = run_jax
    return m


# Per-evaluation cost model for skipping hopeless runs: a method that would take longer than
# --max-seconds per call is not run; its estimate is recorded instead.
EXHAUSTIVE = ("gc_exhaustive", "bare_2n_forward", "torch_slow_1t", "torch_slow")
BATCH_SECONDS = 0.02  # calls shorter than this are timed in back-to-back batches


def forward_costs(c: Case) -> None:
    """Seconds per evaluation: the catalogue forward per batched row (mean over the inputs
    checked, in chunks as the engine sizes them), torch's (one thread) and jax's forward
    per call."""
    d = derivation(c.name)
    per_row = []
    for w in c.wrts:
        x = c.args[w]
        row = x.nbytes + 2 * 8 * max(1, int(np.size(d.forward(**c.args))))
        rows = max(1, min(64, CACHE_BYTES // row))
        X = np.broadcast_to(x, (rows, *x.shape)).copy()
        per_row.append(_median_time(lambda X=X, w=w: d.forward(**{**c.args, w: X})) / rows)
    c.forward_cost["numpy_row"] = statistics.mean(per_row)
    if torch is not None and c.torch_fn is not None:
        tins = tuple(t.detach() for t in _torch_inputs(c))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one thread: the default is erratic here (see README)
        try:
            c.forward_cost["torch"] = _median_time(lambda: c.torch_fn(*tins))
        finally:
            torch.set_num_threads(threads)
    if jax is not None and c.jax_fn is not None:
        jins = tuple(jnp.asarray(c.args[w]) for w in c.wrts)
        c.forward_cost["jax"] = _median_time(
            lambda: jax.block_until_ready(c.jax_fn(*jins)))


def _median_time(fn: Callable[[], Any], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def estimate_exhaustive(c: Case, key: str) -> float:
    """Seconds for the 2n evaluations of an exhaustive check, from the forward costs."""
    if key.startswith("torch"):
        return c.forward_cost.get("torch", 0.0) * 2 * c.n
    return c.forward_cost["numpy_row"] * 2 * c.n


class TimedOut(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimedOut in the main thread after ``seconds`` (torch's slow mode is pure Python
    between small ops, so the alarm lands promptly)."""
    def alarm(signum: int, frame: Any) -> None:
        raise TimedOut

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def time_case(c: Case, ms: dict[str, Callable[[Case], None]], repeats: int,
              max_seconds: float) -> None:
    """Warm up every method once, then time them round-robin (interleaved), ``repeats``
    rounds; a method whose single call takes over 1 s gets 3 repeats, over 10 s one; a
    method estimated (large sizes) or found to take over ``max_seconds`` is skipped."""
    active: dict[str, int] = {}
    first_call: dict[str, float] = {}
    forward_costs(c)
    for key, fn in ms.items():
        if c.size == "large" and key in EXHAUSTIVE:
            est = estimate_exhaustive(c, key)
            if est > max_seconds:
                c.notes[key] = f"skipped: estimated {est:.0f} s per check"
                continue
        t0 = time.perf_counter()
        try:
            with deadline(max_seconds):
                fn(c)  # warm-up (imports, caches) and a first estimate
        except TimedOut:
            c.notes[key] = f"skipped: one call takes over {max_seconds:.0f} s"
            continue
        first = time.perf_counter() - t0
        first_call[key] = first
        active[key] = repeats if first < 1 else min(repeats, 3) if first < 10 else 1
        if active[key] < repeats:
            c.notes[key] = f"{active[key]} repeats (one call takes {first:.1f} s)"
        c.times[key] = []
    for r in range(repeats):  # interleaved: every method once per round
        for key in active:
            if r < active[key]:
                # a call under BATCH_SECONDS is repeated back to back (timeit-style) and
                # the mean taken: a single sub-millisecond call right after another library's
                # mostly measures its cold caches
                calls = max(1, min(100, int(BATCH_SECONDS / max(first_call[key], 1e-6))))
                t0 = time.perf_counter()
                for _ in range(calls):
                    ms[key](c)
                c.times[key].append((time.perf_counter() - t0) / calls)


# ---------------------------------------------------------------- memory and CLI


def memory_child(n: int, mode: str) -> None:
    """Run in a fresh process: peak RSS increase of one check of a linear layer's W."""
    d = derivation("linear")
    rng = np.random.default_rng(0)
    m = max(1, int(round(np.sqrt(n / 2.5))))
    k = n // m
    args = {"W": rng.standard_normal((m, k)), "x": rng.standard_normal(k),
            "b": rng.standard_normal(m)}
    vjp = reference_vjps("linear")["W"]
    d.forward(**args)  # warm the code paths
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    r = check_vjp(d.forward, vjp, args, "W", mode=mode, batched=True)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    print(json.dumps({"elements": m * k, "shape": [m, k], "status": r.status, "mode": r.mode,
                      "seconds": seconds, "peak_increase_mib": (peak - before) / 1024,
                      "budget_mib": DEFAULT_BUDGET / 2**20, "evaluations": r.evaluations}))


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def run_memory(n: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# Runs cli.py as __main__ and, at exit, writes the process's own peak RSS (VmHWM, which
# unlike ru_maxrss does not include the parent's memory inherited before exec).
CLI_WRAPPER = """
import atexit, os, runpy, sys
def peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            open(os.environ['GRADCHECK_BENCH_PEAK'], 'w').write(line.split()[1])
atexit.register(peak)
sys.argv = sys.argv[1:]
runpy.run_path('cli.py', run_name='__main__')
"""


def run_cli(examples: int | None) -> dict[str, Any]:
    """Wall time and peak RSS of ``python cli.py check`` over the whole catalogue."""
    args = ["cli.py", "check"] + (["-n", str(examples)] if examples else [])
    with tempfile.NamedTemporaryFile(suffix=".peak") as peak_file:
        env = {**os.environ, "NO_COLOR": "1", "GRADCHECK_BENCH_PEAK": peak_file.name}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CLI_WRAPPER, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        peak_kib = int(Path(peak_file.name).read_text() or 0)
    lines = proc.stdout.strip().splitlines()
    return {"command": "python " + " ".join(args), "seconds": seconds,
            "peak_rss_mib": peak_kib / 1024, "exit_code": proc.returncode,
            "summary": lines[-1] if lines else proc.stderr.strip()[-200:]}


# ---------------------------------------------------------------- table, targets, JSON


def median(c: Case, key: str) -> float | None:
    t = c.times.get(key)
    return statistics.median(t) if t else None


def best(c: Case, *keys: str) -> float | None:
    found = [v for v in (median(c, k) for k in keys) if v is not None]
    return min(found) if found else None


def ratios(c: Case) -> dict[str, float | None]:
    exh, dirn, bare = median(c, "gc_exhaustive"), median(c, "gc_directional"), median(
        c, "bare_2n_forward")
    slow, fast = best(c, "torch_slow_1t", "torch_slow"), best(c, "torch_fast_1t", "torch_fast")
    return {
        "torch_slow/exhaustive": slow / exh if slow and exh else None,
        "exhaustive/bare": exh / bare if exh and bare else None,
        "directional/torch_fast": dirn / fast if dirn and fast else None,
    }


def fmt(t: float | None) -> str:
    if t is None:
        return "-"
    if t < 1e-3:
        return f"{t * 1e6:.3g} us"
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.3g}x"


COLUMNS = [("gc_exhaustive", "gc exh"), ("gc_directional", "gc dir"),
           ("bare_2n_forward", "bare 2n fwd"), ("torch_slow_1t", "torch slow 1t"),
           ("torch_slow", "torch slow"), ("torch_fast_1t", "torch fast 1t"),
           ("torch_fast", "torch fast"), ("jax_check_grads", "jax")]


def table(cs: list[Case], keys: list[str]) -> str:
    cols = [(k, t) for k, t in COLUMNS if k in keys]
    head = ["case", "n"] + [t for _, t in cols] + ["slow/exh", "exh/bare", "dir/fast"]
    rows = []
    for c in cs:
        r = ratios(c)
        cells = [f"{c.size}: {c.label}", str(c.n)]
        cells += ["skip" if k in c.notes and k not in c.times else fmt(median(c, k))
                  for k, _ in cols]
        cells += [fmt_ratio(v) for v in r.values()]
        rows.append(cells)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cost_table(cs: list[Case]) -> str:
    """Why the ratios are what they are: evaluations used and the cost of one evaluation."""
    head = ["case", "gc exh evals", "gc dir evals", "numpy fwd per row", "torch fwd",
            "jax fwd", "numpy/torch fwd"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cs:
        f = c.forward_cost
        ratio = f["numpy_row"] / f["torch"] if f.get("torch") else None
        cells = [f"{c.size}: {c.label}", str(c.evaluations.get("exhaustive", "-")),
                 str(c.evaluations.get("directional", "-")),
                 *(fmt(f.get(k)) for k in ("numpy_row", "torch", "jax")), fmt_ratio(ratio)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(cs: list[Case], memory: dict[str, Any] | None,
            cli: dict[str, Any] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(what: str, value: float | None, goal: str, ok: bool | None) -> None:
        out.append({"target": what, "value": value, "goal": goal,
                    "met": None if value is None else ok})

    for c in cs:
        r = ratios(c)
        slow = r["torch_slow/exhaustive"]
        need = {"small": 5.0, "medium": 20.0 if c.name in ("conv2d", "linear") else
                10.0 if c.name == "maxpool2d" else None}.get(c.size)
        if need is not None:
            add(f"torch slow / exhaustive, {c.size} {c.label}", slow, f">= {need:g}",
                slow is not None and slow >= need)
        eb = r["exhaustive/bare"]
        if eb is not None:
            add(f"exhaustive / bare 2n forward, {c.size} {c.label}", eb, "<= 1.5", eb <= 1.5)
        df = r["directional/torch_fast"]
        if df is not None:
            add(f"directional / torch fast, {c.size} {c.label}", df, "<= 2", df <= 2)
    if memory:
        v = memory["peak_increase_mib"]
        add(f"peak RSS increase, {memory['elements']:.3g}-element input, directional", v,
            f"<= {memory['budget_mib']:g} MiB", v <= memory["budget_mib"]
            and memory["status"] == "pass")
    if cli:
        add(f"{cli['command']} wall time", cli["seconds"], "<= 20 s",
            cli["seconds"] <= 20 and cli["exit_code"] == 0)
    return out


def environment(threads: int | None) -> dict[str, Any]:
    return {
        "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch.__version__ if torch else None,
        "torch_default_threads": threads,
        "jax": jax.__version__ if jax else None,
        "cpus": os.cpu_count(), "machine": platform.machine(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small cases, 3 repeats, a 10^5-element memory check, CLI at -n 5")
    p.add_argument("--repeats", type=int, default=None, help="repeats per method (default 7)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="skip exhaustive methods estimated to take longer per call (large)")
    p.add_argument("--only", default="", help="run only cases whose label contains this")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-jax", action="store_true")
    p.add_argument("--no-cli", action="store_true")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results.json")
    p.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_child:
        memory_child(a.memory_child, "directional")
        return
    repeats = a.repeats or (3 if a.quick else 7)
    has_torch = torch is not None and not a.no_torch
    has_jax = jax is not None and not a.no_jax
    threads = torch.get_num_threads() if torch is not None else None
    ms = methods(has_torch, has_jax)
    cs = [c for c in cases(a.quick) if a.only in c.label or a.only == c.size]
    missing = [k for k, ok in (("torch", has_torch), ("jax", has_jax)) if not ok]
    if missing:
        print(f"not installed or disabled: {', '.join(missing)} (columns skipped)")
    for c in cs:
        print(f"timing {c.size}: {c.label} (n={c.n}) ...", flush=True)
        time_case(c, ms, repeats, a.max_seconds)
    memory = cli = None
    if not a.only:
        print("memory: directional check of a linear layer's W in a fresh process ...", flush=True)
        memory = run_memory(10**5 if a.quick else 10**7)
        if not a.no_cli:
            print("cli: python cli.py check over the whole catalogue ...", flush=True)
            cli = run_cli(5 if a.quick else None)
    print()
    print(table(cs, list(ms)))
    print()
    print(cost_table(cs))
    for c in cs:
        for k, note in c.notes.items():
            print(f"  {c.size} {c.label}: {k}: {note}")
    if memory:
        print(f"\nmemory: {memory['elements']} elements {tuple(memory['shape'])}, directional: "
              f"{memory['status']} in {memory['seconds']:.2f} s, peak RSS increase "
              f"{memory['peak_increase_mib']:.0f} MiB (budget {memory['budget_mib']:g} MiB)")
    if cli:
        print(f"cli: {cli['command']}: {cli['seconds']:.1f} s, peak RSS "
              f"{cli['peak_rss_mib']:.0f} MiB, exit {cli['exit_code']}: {cli['summary']}")
    ts = targets(cs, memory, cli)
    print("\ntargets:")
    for t in ts:
        mark = {True: "met   ", False: "MISSED", None: "n/a   "}[t["met"]]
        v = "-" if t["value"] is None else f"{t['value']:.3g}"
        print(f"  {mark} {t['target']}: {v} (goal {t['goal']})")
    result = {
        "environment": environment(threads), "repeats": repeats, "quick": a.quick,
        "cases": [{"derivation": c.name, "size": c.size, "label": c.label, "n": c.n,
                   "wrt": c.wrts, "median_seconds": {k: median(c, k) for k in c.times},
                   "seconds": c.times, "notes": c.notes, "ratios": ratios(c),
                   "evaluations": c.evaluations, "forward_seconds": c.forward_cost}
                  for c in cs],
        "memory": memory, "cli": cli, "targets": ts,
    }
    a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
