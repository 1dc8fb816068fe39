"""Formulas are checked in worker processes: nothing a formula does can end the run.

A formula whose process ends (``os._exit``, a segfault, the OOM killer) is reported
``error`` by name with the exit status or the signal; one that does not finish within the
time limit is stopped and reported the same way. The worker is replaced and every other
formula still runs. Workers are forked, so they inherit the loaded formula modules (and
anything a test patched): only a formula's index is sent, and its result comes back by
pipe, unpicklable case values replaced by their repr (the verdict is the worker's, whatever
could be sent). A worker ignores Ctrl-C (the parent stops it) and writes its stdout to
stderr, so a formula that prints cannot corrupt a report written to stdout. Where ``fork``
is unavailable or unsafe (Windows, macOS) formulas run in this process, without isolation
or time limit.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from gradcheck.declare import Formula
from gradcheck.runner import FormulaResult, Settings, blank, run_formula

# fork is what lets a worker inherit the formulas; on macOS system libraries are not safe
# across fork (python's own default there is spawn), so there formulas run in-process
CAN_FORK = "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin"


@dataclass
class _Worker:
    process: Any  # multiprocessing's forked Process
    conn: Connection
    formula: Formula | None = None  # the formula it is checking, if any
    began: float = 0.0
    deadline: float = float("inf")


class Kept:
    """Workers kept alive between calls of ``run_isolated`` (the plugin checks one formula
    per call): forked once, knowing every formula of ``formulas``; ``close()`` ends them."""

    def __init__(self, formulas: list[Formula]) -> None:
        self.formulas = formulas
        self.idle: list[_Worker] = []

    def close(self) -> None:
        for w in self.idle:
            _stop(w)
        self.idle.clear()


def run_isolated(
    formulas: list[Formula], settings: Settings, *, jobs: int = 1,
    timeout: float | None = None, started: Callable[[Formula], None] | None = None,
    kept: Kept | None = None,
) -> Iterator[FormulaResult]:
    """Yield each formula's result as it finishes, checked by ``jobs`` worker processes.

    ``timeout`` (seconds, None for none) bounds each formula. A worker that dies or runs
    out of time is replaced. A KeyboardInterrupt, in this process or raised by a formula,
    stops every worker and propagates; the results already yielded stand. With ``kept``
    the workers are taken from it and, once every result is yielded, given back.
    """
    if not CAN_FORK:
        for f in formulas:
            if started:
                started(f)
            yield run_formula(f, settings)
        return
    known = formulas if kept is None else kept.formulas
    index = {id(f): i for i, f in enumerate(known)}
    waiting, workers = list(formulas), list[_Worker]()
    if kept is not None:
        workers = [w for w in kept.idle if w.process.is_alive()]
        kept.idle = [w for w in kept.idle if w not in workers]
        kept.close()  # the dead ones
    try:
        while waiting or any(w.formula for w in workers):
            for w in [w for w in workers if w.formula is None] + [None] * (jobs - len(workers)):
                if not waiting:
                    break
                if w is None:
                    w = _fork(known)
                    workers.append(w)
                w.formula, w.began = waiting.pop(0), time.monotonic()
                w.deadline = w.began + timeout if timeout else float("inf")
                if started:
                    started(w.formula)
                with contextlib.suppress(OSError):  # a worker that died: _collect says so
                    w.conn.send((index[id(w.formula)], settings))
            busy = [w for w in workers if w.formula is not None]
            soonest = min(w.deadline for w in busy)
            left = None if soonest == float("inf") else max(0.0, soonest - time.monotonic())
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=left)
            for w in busy:
                result = _collect(w, timeout, settings.dtype)
                if result is None:
                    continue
                if not w.process.is_alive():
                    _stop(w)
                    workers.remove(w)
                yield result
        if kept is not None:
            kept.idle, workers = workers, []
    finally:  # done, Ctrl-C or an error: no worker outlives the run unless kept
        for w in workers:
            _stop(w)


def _fork(formulas: list[Formula]) -> _Worker:
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    sys.stdout.flush()  # a forked child must not write out the parent's buffered output
    sys.stderr.flush()
    process = context.Process(target=_work, args=(formulas, theirs, ours),
                              daemon=True, name="gradcheck worker")
    with warnings.catch_warnings():  # python >= 3.12 warns when a threaded process forks
        warnings.simplefilter("ignore", DeprecationWarning)
        gc.freeze()  # the worker's collections leave the objects it inherits (their pages) be
        try:
            process.start()
        finally:
            gc.unfreeze()
    theirs.close()
    return _Worker(process, ours)


def _work(formulas: list[Formula], conn: Connection, parents: Connection) -> None:
    """A worker's loop: check the formula whose index arrives (with the settings), send its
    result back; end when the pipe closes."""
    parents.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.dup2(2, 1)  # the formulas' prints go to stderr, not into a report on stdout
    while True:
        try:
            i, settings = conn.recv()
        except EOFError:
            return
        try:
            message: tuple[str, Any] = ("result", run_formula(formulas[i], settings))
        except KeyboardInterrupt:  # raised by the formula itself: the run stops, as in-process
            message = ("interrupt", None)
        except BaseException:  # run_formula contains user code's errors: this is gradcheck's
            out = blank(formulas[i], settings.dtype)
            out.internal = True
            out.message = f"{formulas[i].id}: internal error in gradcheck (not in the " \
                          f"formula): {traceback.format_exc()}"
            message = ("result", out)
        conn.send_bytes(_portable(message))


def _collect(w: _Worker, timeout: float | None, dtype: str) -> FormulaResult | None:
    """The worker's result, an error result if it died or ran out of time, or None while
    it is still at work."""
    assert w.formula is not None
    f = w.formula
    try:
        if w.conn.poll():
            kind, result = pickle.loads(w.conn.recv_bytes())
            if kind == "interrupt":
                raise KeyboardInterrupt
            w.formula = None
            return result  # type: ignore[no-any-return]
    except (EOFError, OSError):  # the pipe closed without a result: the worker is ending
        left = w.deadline - time.monotonic()
        w.process.join(None if left == float("inf") else max(0.0, left))
    if w.process.is_alive() and time.monotonic() < w.deadline:
        return None
    w.formula = None
    out = blank(f, dtype)
    out.seconds = time.monotonic() - w.began
    if w.process.is_alive():
        _stop(w)
        out.message = f"{f.id}: did not finish in {timeout:g} s (the time limit per " \
                      "formula); stopped"
        return out
    w.process.join()
    out.message = f"{f.id}: the process checking it {_ending(w.process.exitcode)}"
    return out


def _ending(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"ended with exit status {code} before reporting a result"


def _stop(w: _Worker) -> None:
    if w.process.is_alive():
        w.process.kill()
    w.process.join()
    w.conn.close()


def _portable(message: tuple[str, Any]) -> bytes:
    """The message pickled; case values that cannot be pickled (a lambda, a lock) travel as
    their repr, so a verdict never depends on what could be sent."""
    try:
        return pickle.dumps(message)
    except Exception:
        pass
    kind, result = message
    if result.failing_case is not None:
        result.failing_case = {k: _shown(v) for k, v in result.failing_case.items()}
    if result.failing_result is not None:
        fr = result.failing_result
        fr.params = {k: _shown(v) for k, v in fr.params.items()}
    try:
        return pickle.dumps((kind, result))
    except Exception:
        result.failing_case = result.failing_result = None
        return pickle.dumps((kind, result))


class Shown:
    """Stands for a value that could not be sent from the child: its repr."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _shown(value: Any) -> Any:
    try:
        pickle.dumps(value)
        return value
    except Exception:
        pass
    try:
        return Shown(repr(value))
    except Exception:
        return Shown(f"<unprintable {type(value).__name__}>")
