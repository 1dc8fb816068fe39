"""The cost of checking each formula in a child process of its own (gradcheck.isolate).

The default run (``python cli.py check``: the built-in catalogue, 100 examples, seed 0,
one job) is timed both ways, interleaved round by round in this one process: every formula
checked in this process (``run_formula`` in a loop, as before isolation) and every formula
in a forked child (``run_all``). Prints the medians, their difference per formula and
their ratio; the verdicts of both ways must be the same::

    python benchmarks/isolation.py [--rounds 5] [--examples 100]
"""

from __future__ import annotations

import argparse
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
    verdicts: dict[str, list[str]] = {}
    for n in range(args.rounds):
        for way in ("in-process", "isolated") if n % 2 == 0 else ("isolated", "in-process"):
            start = time.perf_counter()
            if way == "isolated":
                results = run_all(formulas, settings).results
            else:
                results = [run_formula(f, settings) for f in formulas]
            times[way].append(time.perf_counter() - start)
            verdicts[way] = [r.status for r in results]
        print(f"round {n + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    if verdicts["in-process"] != verdicts["isolated"]:
        raise SystemExit(f"verdicts differ: {verdicts}")
    before, after = (statistics.median(times[k]) for k in ("in-process", "isolated"))
    print(f"{len(formulas)} formulas, {args.examples} examples, {args.rounds} rounds (medians)")
    print(f"in-process {before:.2f} s, isolated {after:.2f} s: +{after - before:.2f} s "
          f"({1000 * (after - before) / len(formulas):.0f} ms per formula), "
          f"ratio {after / before:.3f}")


if __name__ == "__main__":
    main()
