"""Peak memory of one check in a fresh process, and the CLI's wall time and peak RSS.

    python benchmarks/memory.py            # 10^7-element checks, the real-size conv, the CLI
    python benchmarks/memory.py --quick    # 10^5 elements, the CLI at -n 5

For each check: the peak RSS increase (VmHWM after resetting it, minus VmRSS before) of
check_vjp, and, in another fresh process, of what any checker needs at least: the forward
once, g drawn, the vjp once (its output held). "engine" is the difference: the memory the
default budget (256 MiB) is meant to bound. The user's own forward and vjp (their outputs
and temporaries) are theirs, not the engine's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def setup(kind: str, n: int) -> tuple[Any, Any, dict[str, Any], str, Any]:
    """(forward, vjp, case, wrt, structure) of a check with about n elements."""
    from gradcheck.structure import elementwise

    rng = np.random.default_rng(0)
    if kind == "elementwise":
        return (lambda x: np.tanh(x), lambda dy, x: dy * (1 - np.tanh(x) ** 2),
                {"x": rng.standard_normal(n)}, "x", elementwise())
    from cases import derivation, reference

    if kind == "linear":
        d, m = derivation("linear"), max(1, int(round(np.sqrt(n / 2.5))))
        case = {"W": rng.standard_normal((m, n // m)), "x": rng.standard_normal(n // m),
                "b": rng.standard_normal(m)}
        return d.forward, reference("linear", "W"), case, "W", d.structure["W"]
    d = derivation("conv2d")  # conv: a (16, s, s) input with s*s*16 ~ n, 16 filters
    side = max(3, int(round(np.sqrt(n / 16))))
    case = {"x": rng.standard_normal((16, side, side)), "W": rng.standard_normal((16, 16, 3, 3)),
            "b": rng.standard_normal(16), "s": 1}
    return d.forward, reference("conv2d", "x"), case, "x", d.structure["x"]


def child(kind: str, n: int, baseline: bool) -> None:
    from gradcheck.check import check_vjp

    forward, vjp, case, wrt, structure = setup(kind, n)
    batched = kind != "elementwise"
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    before = _kib("VmRSS")
    t0 = time.perf_counter()
    if baseline:
        y = forward(**case)
        g = np.random.default_rng(0).standard_normal(np.shape(y))
        a = vjp(g, **case)
        out: dict[str, Any] = {"held": int(y.nbytes + g.nbytes + a.nbytes)}
    else:
        r = check_vjp(forward, vjp, case, wrt, batched=batched, structure=structure)
        out = {"status": r.status, "mode": r.mode, "evaluations": r.evaluations}
    out.update(seconds=time.perf_counter() - t0, peak_mib=(_kib("VmHWM") - before) / 1024,
               elements=int(case[wrt].size))
    print(json.dumps(out))


def measure(kind: str, n: int) -> dict[str, Any]:
    def run(*extra: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, __file__, "--child", kind, str(n), *extra],
                              cwd=ROOT / "benchmarks", capture_output=True, text=True, check=True)
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    check, base = run(), run("--baseline")
    return {"kind": kind, **check, "baseline_peak_mib": base["peak_mib"],
            "engine_mib": check["peak_mib"] - base["peak_mib"], "budget_mib": 256}


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


def cli(examples: int | None) -> dict[str, Any]:
    """Wall time and the child's own peak RSS of ``python cli.py check`` (VmHWM at exit)."""
    args = ["cli.py", "check"] + (["-n", str(examples)] if examples else [])
    with tempfile.NamedTemporaryFile(suffix=".peak") as peak:
        env = {**os.environ, "NO_COLOR": "1", "GRADCHECK_BENCH_PEAK": peak.name}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CLI_WRAPPER, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        kib = int(Path(peak.name).read_text() or 0)
    lines = proc.stdout.strip().splitlines()
    return {"command": "python " + " ".join(args), "seconds": seconds,
            "peak_rss_mib": kib / 1024, "exit_code": proc.returncode,
            "summary": lines[-1] if lines else proc.stderr.strip()[-200:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-cli", action="store_true")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "memory.json")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a.baseline)
        return
    n = 10**5 if a.quick else 10**7
    rows = [measure("elementwise", n), measure("linear", n), measure("conv", 65536)]
    for r in rows:
        print(f"{r['kind']}: {r['elements']} elements, {r['mode']}, {r['status']} in "
              f"{r['seconds']:.2f} s: peak +{r['peak_mib']:.0f} MiB; forward + vjp alone "
              f"+{r['baseline_peak_mib']:.0f} MiB; engine +{r['engine_mib']:.0f} MiB "
              f"(budget {r['budget_mib']} MiB)")
    out: dict[str, Any] = {"checks": rows}
    if not a.no_cli:
        out["cli"] = c = cli(5 if a.quick else None)
        print(f"cli: {c['command']}: {c['seconds']:.1f} s, peak RSS {c['peak_rss_mib']:.0f} "
              f"MiB, exit {c['exit_code']}: {c['summary']}")
    a.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
