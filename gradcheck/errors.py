"""The errors gradcheck raises on purpose; anything else escaping the engine is a bug."""

from __future__ import annotations


class GradcheckError(Exception):
    """Base class of gradcheck's own errors."""


class InvalidCase(GradcheckError, ValueError):
    """A case or argument handed to the engine is unusable (names the argument and value)."""


class LoadError(GradcheckError):
    """A formula module could not be loaded, defines nothing, or repeats a formula id."""


class GradientMismatch(AssertionError):
    """Raised by ``assert_vjp``: the analytic gradient disagrees with central differences."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
