"""Many formulas in one run: in order, or in worker processes, with the same results.

Ctrl-C keeps every formula finished so far and marks the run interrupted.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gradcheck.declare import Formula
from gradcheck.runner import FormulaResult, Settings, blank, run_formula


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
    modules: list[str] | None = None,
) -> Run:
    """Run formulas (or in ``jobs`` worker processes, which load ``modules``), sorted by id.

    The results are the same, in the same order, whatever ``jobs`` is. Ctrl-C keeps every
    formula finished so far; the run is then marked interrupted.
    """
    settings = settings or Settings()
    formulas = sorted(formulas, key=lambda f: f.id)
    run = Run(settings, [])
    start = time.perf_counter()
    try:
        if jobs > 1 and modules is not None and len(formulas) > 1:
            _run_parallel(run, formulas, modules, jobs, progress)
        else:
            for i, f in enumerate(formulas):
                if progress:
                    progress(f.id, i, len(formulas))
                run.results.append(run_formula(f, settings))
            if progress and formulas:
                progress("", len(formulas), len(formulas))
    except KeyboardInterrupt:
        run.interrupted = True
    order = {f.id: i for i, f in enumerate(formulas)}
    run.results.sort(key=lambda r: order[r.id])
    run.seconds = time.perf_counter() - start
    return run


_WORKER: dict[str, Formula] = {}


def _load_worker(modules: list[str]) -> None:
    import signal

    from gradcheck.declare import collect_formulas

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    _WORKER.update({f.id: f for f in collect_formulas(modules)})


def _run_in_worker(formula_id: str, settings: Settings) -> FormulaResult:
    return run_formula(_WORKER[formula_id], settings)


def _run_parallel(
    run: Run, formulas: list[Formula], modules: list[str], jobs: int, progress: Progress | None
) -> None:
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor, as_completed

    # Formulas of torch or jax code load frameworks that run threads (OpenMP, XLA's pools):
    # a fork copies their locks but not their threads, and a worker can deadlock. Workers
    # then start from a fresh interpreter (they load the modules by name anyway).
    fresh = any(m in sys.modules for m in ("torch", "jax")) \
        and "forkserver" in multiprocessing.get_all_start_methods()
    pool = ProcessPoolExecutor(min(jobs, len(formulas)), initializer=_load_worker,
                               initargs=(modules,),
                               mp_context=multiprocessing.get_context(
                                   "forkserver" if fresh else None))
    futures: dict[Future[FormulaResult], Formula] = {}
    collected: set[str] = set()

    def collect(future: Future[FormulaResult]) -> None:
        f = futures[future]
        try:
            run.results.append(future.result())
        except Exception as exc:  # the worker died: record it, keep the others
            crashed = blank(f)
            crashed.message = f"{f.id}: worker failed: {type(exc).__name__}: {exc}"
            run.results.append(crashed)
        collected.add(f.id)

    try:
        futures = {pool.submit(_run_in_worker, f.id, run.settings): f for f in formulas}
        if progress:
            progress(formulas[0].id, 0, len(formulas))
        for done, future in enumerate(as_completed(futures), start=1):
            collect(future)
            if progress:
                pending = [f.id for fu, f in futures.items() if not fu.done()]
                progress(pending[0] if pending else "", done, len(formulas))
    except BaseException:  # Ctrl-C above all: keep what finished, stop the rest at once
        for future in futures:
            if future.done() and not future.cancelled() and futures[future].id not in collected:
                collect(future)
        processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    pool.shutdown(wait=True)
