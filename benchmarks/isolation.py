"""The cost of checking each formula in a child process of its own (gradcheck.isolate).

The default run (``python cli.py check``: the built-in catalogue, 100 examples, seed 0,
one job) is timed both ways, interleaved round by round in this one process: every formula
checked in this process (``run_formula`` in a loop, as before isolation) and every formula
in a forked worker (``run_all``). Prints the medians of wall-clock and of CPU time (this
process and its reaped children, user + system: steadier than wall-clock on a shared
machine), their difference per formula and their ratio; the verdicts of both ways must be
the same::

    python benchmarks/isolation.py [--rounds 5] [--examples 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradcheck.declare import collect_formulas  # noqa: E402
from gradcheck.runall import run_all  # noqa: E402
from gradcheck.runner import Settings, run_formula  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--examples", type=int, default=100)
    args = parser.parse_args()
    modules = sorted(f"derivations.{p.stem}" for p in (ROOT / "derivations").glob("*.py")
                     if p.stem != "__init__")
    formulas = collect_formulas(modules)
    settings = Settings(examples=args.examples)
    times: dict[str, list[float]] = {"in-process": [], "isolated": []}
    cpu: dict[str, list[float]] = {"in-process": [], "isolated": []}
    verdicts: dict[str, list[str]] = {}
    for n in range(args.rounds):
        for way in ("in-process", "isolated") if n % 2 == 0 else ("isolated", "in-process"):
            start, t0 = time.perf_counter(), os.times()
            if way == "isolated":
                results = run_all(formulas, settings).results
            else:
                results = [run_formula(f, settings) for f in formulas]
            times[way].append(time.perf_counter() - start)
            t1 = os.times()
            cpu[way].append(sum(t1[:4]) - sum(t0[:4]))
            verdicts[way] = [r.status for r in results]
        print(f"round {n + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s (cpu {cpu[k][-1]:.2f} s)"
                                             for k, v in times.items()), flush=True)
    if verdicts["in-process"] != verdicts["isolated"]:
        raise SystemExit(f"verdicts differ: {verdicts}")
    print(f"{len(formulas)} formulas, {args.examples} examples, {args.rounds} rounds (medians)")
    for what, table in (("wall", times), ("cpu", cpu)):
        before, after = (statistics.median(table[k]) for k in ("in-process", "isolated"))
        print(f"{what}: in-process {before:.2f} s, isolated {after:.2f} s: "
              f"{after - before:+.2f} s ({1000 * (after - before) / len(formulas):+.0f} ms per "
              f"formula), ratio {after / before:.3f}")


if __name__ == "__main__":
    main()
