"""The verdict on one case, and its numpy.testing-style explanation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcheck.compare import RULE
from gradcheck.safetext import safe_repr

STATUSES = ("pass", "fail", "nonsmooth", "error")


@dataclass
class Element:
    """One compared element (or, in directional mode, one direction when index is None)."""

    index: tuple[int, ...] | None
    analytic: float
    numeric: float
    abs_error: float
    rel_error: float
    kind: str  # "fail" or "nonsmooth"


@dataclass
class CaseResult:
    status: str
    wrt: str
    mode: str = "exhaustive"
    dtype: str = "float64"
    seed: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    analytic: np.ndarray | None = None
    numeric: np.ndarray | None = None
    rel_error: np.ndarray | None = None
    failed: np.ndarray | None = None  # element-wise: outside tolerance and not at a kink
    kinked: np.ndarray | None = None  # element-wise: at a kink
    max_rel_error: float = 0.0
    max_abs_error: float = 0.0
    worst_index: tuple[int, ...] | None = None
    checked: int = 0  # elements (exhaustive) or directions (directional) compared
    mismatches: int = 0  # of those, outside tolerance
    nonsmooth: int = 0  # of those, at a kink
    worst: list[Element] = field(default_factory=list)
    diagnosis: str = ""
    message: str = ""  # what went wrong, for status "error"
    notes: list[str] = field(default_factory=list)
    noise: float = 0.0
    rtol: float = 0.0
    evaluations: int = 0
    upstream: np.ndarray | None = None  # the upstream gradient g the case was checked with

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def case_text(self) -> str:
        arrays = ", ".join(f"{k} {tuple(v)}" for k, v in self.shapes.items())
        params = ", ".join(f"{k}={safe_repr(v)}" for k, v in self.params.items())
        return arrays + (f"; {params}" if params else "")

    def explain(self, criterion: bool = True) -> str:
        """The numpy.testing-style message: criterion (unless a report states it once),
        mismatches, worst elements, case."""
        unit = "directions" if self.mode == "directional" else "elements"
        lines = [f"gradient with respect to {self.wrt!r}: {self.status.upper()}"]
        if self.status == "error":
            lines.append(self.message)
        else:
            if criterion:
                lines.append(f"Criterion: {RULE}")
            lines.append(f"rtol = {self.rtol:.3g}, sigma_L = {self.noise:.3g}")
            pct = 100 * self.mismatches / self.checked if self.checked else 0.0
            lines.append(f"Mismatched {unit}: {self.mismatches} / {self.checked} ({pct:.3g} %)")
            if self.nonsmooth:
                lines.append(f"At a kink (one-sided slopes disagree): {self.nonsmooth}")
            if self.worst:
                lines.append(
                    f"  {'index':<16} {'analytic':>14} {'numeric':>14} {'rel error':>10}  kind"
                )
                for e in self.worst:
                    where = "direction" if e.index is None else str(e.index)
                    lines.append(
                        f"  {where:<16} {e.analytic:>14.7g} {e.numeric:>14.7g} "
                        f"{e.rel_error:>10.3g}  {e.kind}"
                    )
            lines.append(f"Max absolute difference: {self.max_abs_error:.6g}")
            lines.append(f"Max relative difference: {self.max_rel_error:.6g}")
            if self.diagnosis:
                lines.append(f"Diagnosis: {self.diagnosis}")
        lines.append(f"Case: {self.case_text()}")
        lines.append(
            f"Mode: {self.mode}, dtype {self.dtype}, seed {self.seed}, "
            f"{self.evaluations} evaluations"
        )
        lines.extend(f"Note: {n}" for n in self.notes)
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """Plain Python types only (safe for JSON and pytest-xdist)."""
        return {
            "status": self.status,
            "wrt": self.wrt,
            "mode": self.mode,
            "dtype": self.dtype,
            "seed": int(self.seed),
            "shapes": {k: [int(s) for s in v] for k, v in self.shapes.items()},
            "params": {k: _plain(v) for k, v in self.params.items()},
            "max_rel_error": float(self.max_rel_error),
            "max_abs_error": float(self.max_abs_error),
            "worst_index": None if self.worst_index is None else [int(i) for i in self.worst_index],
            "checked": int(self.checked),
            "mismatches": int(self.mismatches),
            "nonsmooth": int(self.nonsmooth),
            "diagnosis": self.diagnosis,
            "message": self.message,
            "notes": list(self.notes),
        }


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return safe_repr(v)
