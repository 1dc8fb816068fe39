"""The step-size curve: error of a central difference against h, for one case.

Along one random unit direction v, the directional difference (L(x+hv) - L(x-hv)) / 2h is
compared with the analytic projection <a, v> for h from 1e-1 down to 1e-13. The curve is
a V: truncation error (~h^2) on the right, rounding (~noise/h) on the left; its floor is
where the step rule h = eps^(1/3) * scale should sit. For a wrong formula the curve
flattens at the formula's own error instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradcheck.guard import guard, prepare
from gradcheck.numeric import Loss, eps_of, random_direction, rms_scale
from gradcheck.verdict import projection

STEPS = tuple(10.0 ** -k for k in np.arange(1, 13.5, 0.5))


def step_sweep(
    forward: Callable[..., Any],
    vjp: Callable[..., Any],
    case: Mapping[str, Any],
    wrt: str,
    *,
    seed: int = 0,
    batched: bool = False,
    steps: tuple[float, ...] = STEPS,
) -> dict[str, Any]:
    """{'h': [...], 'error': [...], 'chosen_h': h*, 'chosen_error': e*} in plain floats."""
    case, _, _ = prepare(case, wrt, "auto", np.float64)
    forward, vjp = guard(forward, "forward"), guard(vjp, "vjp")  # positional callables too
    x = case[wrt]
    rng = np.random.default_rng(seed)
    y = np.asarray(forward(**case))
    g = rng.standard_normal(y.shape)
    a = np.asarray(vjp(g, **case), dtype=np.float64)
    v = random_direction(rng, x)
    loss = Loss(forward, case, wrt, g, batched=batched)
    chosen = eps_of(x.dtype) ** (1 / 3) * rms_scale(x)  # the step directional mode takes
    errors = []
    for h in [*steps, chosen]:
        Lp, Lm = loss.along([v, v], [h, -h])
        numeric = (Lp - Lm) / (2 * h)
        analytic = projection(x, v, h, a)[0]  # on the stencil as rounded
        errors.append(abs(numeric - analytic) / max(abs(analytic), abs(numeric), 1e-300))
    return {"h": [float(h) for h in steps], "error": [float(e) for e in errors[:-1]],
            "chosen_h": float(chosen), "chosen_error": float(errors[-1])}


def sweep_table(sweep: dict[str, Any]) -> str:
    """The curve as a terminal table with a log-scale bar; the chosen step is marked."""
    rows = sorted(zip(sweep["h"] + [sweep["chosen_h"]], sweep["error"] + [sweep["chosen_error"]],
                      [False] * len(sweep["h"]) + [True], strict=True), reverse=True)
    lines = [f"{'h':>9}  {'rel error':>9}  log10(error)"]
    for h, e, chosen in rows:
        bar = "#" * max(0, int(round(17 + np.log10(max(e, 1e-17)))))
        mark = "  <- chosen step eps^(1/3)*scale" if chosen else ""
        lines.append(f"{h:9.1e}  {e:9.2e}  {bar}{mark}")
    return "\n".join(lines)
