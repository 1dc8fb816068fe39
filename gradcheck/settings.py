"""The run settings shared by the CLI and the pytest plugin: names, defaults, help, checks.

Both front ends build their options from this one table, so a default or a choice is
written once. It imports neither numpy nor the engine: the plugin reads it at every pytest
start-up.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MODES = ("auto", "exhaustive", "directional")
DTYPES = ("float64", "float32")

EXAMPLES, SEED, MODE, DTYPE = 100, 0, "auto", "float64"
TIMEOUT = 600.0  # seconds per formula; a formula that hangs must not hang CI
REPORT_ONLY = False  # the outcomes decide the exit status (CLI) / the items' outcomes (pytest)

HELP = {
    "examples": "Hypothesis cases per formula.",
    "seed": "Seed for hypothesis and the upstream gradients.",
    "mode": "Element by element, along random directions, or by size.",
    "dtype": "Dtype the forward and the formula are checked in.",
    "timeout": "Time limit per formula in seconds, after which it is an error; 0 for none.",
    "report_only": "Only report: formulas whose outcome differs from their expectation do "
                   "not fail the run (for auditing code with no known expectations); usage "
                   "and internal errors and interrupts still do.",
}


@dataclass
class Settings:
    """How each formula is checked; a bad value is a ValueError naming it."""

    examples: int = EXAMPLES
    seed: int = SEED
    mode: str = MODE
    dtype: str = DTYPE

    def __post_init__(self) -> None:
        if isinstance(self.examples, bool) or not isinstance(self.examples, int) \
                or self.examples < 1:
            raise ValueError(f"examples must be an integer >= 1, got examples={self.examples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got seed={self.seed!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got mode={self.mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got dtype={self.dtype!r}")


def time_limit(seconds: Any) -> float | None:
    """The per-formula time limit in seconds, None for none (0); a ValueError naming a bad
    value."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 <= value < float("inf"):  # NaN too
        raise ValueError(f"timeout must be a number of seconds >= 0 (0 for none), "
                         f"got timeout={seconds!r}")
    return value or None


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (then act as usual): a report being
    written is written whole."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def end_on_sigterm() -> Any:
    """SIGTERM ends a run like Ctrl-C (reports keep what finished); returns the old handler."""
    return signal.signal(signal.SIGTERM, _terminate)
