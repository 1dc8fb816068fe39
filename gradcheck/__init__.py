"""gradcheck: check hand-derived gradients against central finite differences.

The public names load lazily, so that ``import gradcheck`` (done by the pytest plugin at
every pytest start-up) costs nothing until the engine is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # type checkers see the real signatures; at run time they load lazily
    from gradcheck import strategies
    from gradcheck.check import assert_vjp, check_vjp
    from gradcheck.compare import RULE
    from gradcheck.declare import Derivation, Formula, collect_formulas, load_derivations
    from gradcheck.errors import GradcheckError, GradientMismatch, InvalidCase, LoadError
    from gradcheck.noise import numeric_gradient
    from gradcheck.result import CaseResult

_WHERE = {
    "check_vjp": "gradcheck.check",
    "assert_vjp": "gradcheck.check",
    "numeric_gradient": "gradcheck.noise",
    "CaseResult": "gradcheck.result",
    "RULE": "gradcheck.compare",
    "Derivation": "gradcheck.declare",
    "Formula": "gradcheck.declare",
    "Layer": "gradcheck.layers",
    "load_derivations": "gradcheck.declare",
    "collect_formulas": "gradcheck.declare",
    "GradcheckError": "gradcheck.errors",
    "GradientMismatch": "gradcheck.errors",
    "InvalidCase": "gradcheck.errors",
    "LoadError": "gradcheck.errors",
}

__all__ = [  # written out, so that linters and type checkers read it; = _WHERE + strategies
    "CaseResult", "Derivation", "Formula", "GradcheckError", "GradientMismatch",
    "InvalidCase", "LoadError", "RULE", "assert_vjp", "check_vjp", "collect_formulas",
    "load_derivations", "numeric_gradient", "strategies",
]


def __getattr__(name: str) -> Any:
    if name == "strategies":
        return importlib.import_module("gradcheck.strategies")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
