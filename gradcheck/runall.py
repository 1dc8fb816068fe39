"""Many formulas in one run, each in a child process, with the same results whatever ``jobs``.

Ctrl-C keeps every formula finished so far and marks the run interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gradcheck.declare import Formula
from gradcheck.runner import FormulaResult, Settings


@dataclass
class Run:
    settings: Settings
    results: list[FormulaResult]
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.matches_expectation for r in self.results)


Progress = Callable[[str, int, int], None]  # (formula id, finished so far, total)


def run_all(
    formulas: Iterable[Formula],
    settings: Settings | None = None,
    progress: Progress | None = None,
    *,
    jobs: int = 1,
    timeout: float | None = None,
) -> Run:
    """Run formulas, each in a child process of its own, ``jobs`` at a time, sorted by id.

    The results are the same, in the same order, whatever ``jobs`` is. A formula that ends
    its process or runs past ``timeout`` seconds is an ``error`` (gradcheck.isolate). Ctrl-C
    keeps every formula finished so far; the run is then marked interrupted.
    """
    from gradcheck.isolate import run_isolated

    settings = settings or Settings()
    formulas = sorted(formulas, key=lambda f: f.id)
    run = Run(settings, [])
    start = time.perf_counter()
    running: list[str] = []

    def started(f: Formula) -> None:
        running.append(f.id)
        if progress:
            progress(f.id, len(run.results), len(formulas))

    try:
        for result in run_isolated(formulas, settings, jobs=jobs, timeout=timeout,
                                   started=started):
            run.results.append(result)
            running.remove(result.id)
            if progress:
                progress(running[0] if running else "", len(run.results), len(formulas))
    except KeyboardInterrupt:
        run.interrupted = True
    order = {f.id: i for i, f in enumerate(formulas)}
    run.results.sort(key=lambda r: order[r.id])
    run.seconds = time.perf_counter() - start
    return run
