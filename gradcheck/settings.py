"""The run settings shared by the CLI and the pytest plugin: names, defaults, help, checks.

Both front ends build their options from this one table, so a default or a choice is
written once. It imports neither numpy nor the engine: the plugin reads it at every pytest
start-up.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

MODES = ("auto", "exhaustive", "directional")
DTYPES = ("float64", "float32")

EXAMPLES, SEED, MODE, DTYPE = 100, 0, "auto", "float64"
REPORT_ONLY = False  # the outcomes decide the exit status (CLI) / the items' outcomes (pytest)

HELP = {
    "examples": "Hypothesis cases per formula.",
    "seed": "Seed for hypothesis and the upstream gradients.",
    "mode": "Element by element, along random directions, or by size.",
    "dtype": "Dtype the forward and the formula are checked in.",
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
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got seed={self.seed!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got mode={self.mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got dtype={self.dtype!r}")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def end_on_sigterm() -> Any:
    """SIGTERM ends a run like Ctrl-C (reports keep what finished); returns the old handler."""
    return signal.signal(signal.SIGTERM, _terminate)
