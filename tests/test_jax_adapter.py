"""gradcheck.jax: custom_vjp and custom_jvp rules checked against differences of the primal
function, side by side with jax.test_util.check_grads on the same rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from gradcheck import Derivation, check_vjp  # noqa: E402
from gradcheck.runner import Settings, run_formula  # noqa: E402
from tests.fixtures import jax_rules as rules  # noqa: E402

QUICK = Settings(examples=12)

# (rule, input, kind of bug, check_grads' verdict at the FIXED case)
MUTANTS = [
    ("linear_sign", "W", "sign", "fail"),
    ("linear_scale", "b", "scale", "fail"),
    ("layer_norm_no_mean", "x", "missing term", "fail"),
    ("gate_swapped", "x", "wrong input order", "fail"),
    ("max_pool_assign", "x", "stride-dependent pooling", "pass"),
    ("batch_norm_no_xhat", "x", "batch norm, gamma 1e-6", "pass"),
]
CORRECT = ["linear", "gate", "layer_norm", "batch_norm", "max_pool", "logsumexp", "softplus"]


def formula(name: str, wrt: str) -> Any:
    return next(f for f in getattr(rules, f"d_{name}").formulas if f.wrt == wrt)


@pytest.mark.parametrize("name", CORRECT)
def test_correct_rules_pass(name: str) -> None:
    for f in getattr(rules, f"d_{name}").formulas:
        result = run_formula(f, QUICK)
        assert result.status == "pass", (f.id, result.message, result.counterexample)
    if name in rules.FIXED:
        assert rules.jax_check_grads(name) == "pass"


@pytest.mark.parametrize(("name", "wrt", "kind", "verdict"), MUTANTS, ids=[m[2] for m in MUTANTS])
def test_every_mutant_fails_with_a_counterexample(name: str, wrt: str, kind: str,
                                                 verdict: str) -> None:
    result = run_formula(formula(name, wrt), QUICK)
    assert result.status == "fail", (kind, result.status, result.message)
    assert result.counterexample is not None and result.counterexample["mismatches"] > 0
    assert rules.jax_check_grads(name) == verdict


def test_nondiff_argnums_are_static_and_x64_is_on() -> None:
    d = rules.d_logsumexp
    assert [f.wrt for f in d.formulas] == ["x"]  # axis is nondiff_argnums=(1,)
    assert jax.config.jax_enable_x64
    assert d.runs_on.startswith(f"jax {jax.__version__} on cpu")
    assert "custom_vjp" in d.formulas[0].text
    assert "custom_jvp" in rules.d_softplus.formulas[0].text


def test_logsumexp_is_stable_where_a_naive_one_overflows() -> None:
    case = {"x": np.array([[1000.0, 999.0, -1000.0], [0.0, 1e-12, -2.2e-16]]), "axis": 1}
    f = rules.d_logsumexp.formulas[0]
    result = check_vjp(rules.d_logsumexp.forward, f.vjp, case, "x")
    assert result.status == "pass", result.explain()


def test_a_wrong_custom_jvp_rule_fails() -> None:
    @jax.custom_jvp
    def softplus(x: Any) -> Any:
        return jax.numpy.logaddexp(x, 0.0)

    softplus.defjvp(lambda p, t: (softplus(p[0]), t[0] * jax.nn.sigmoid(-p[0])))  # sign of x
    d = Derivation.from_jax("softplus", softplus, cases=None)
    case = {"x": np.linspace(-2.0, 2.0, 5)}
    assert check_vjp(d.forward, d.formulas[0].vjp, case, "x").status == "fail"


def test_several_outputs_as_a_pytree() -> None:
    def fwd(x: Any) -> Any:
        return (jax.numpy.sin(x), {"sq": x ** 2}), x

    def primal(x: Any) -> Any:
        return fwd(x)[0]

    good, forgets = jax.custom_vjp(primal), jax.custom_vjp(primal)
    good.defvjp(fwd, lambda x, g: (g[0] * jax.numpy.cos(x) + 2 * x * g[1]["sq"],))
    forgets.defvjp(fwd, lambda x, g: (g[0] * jax.numpy.cos(x),))  # drops the second output
    case = {"x": np.linspace(-2.0, 2.0, 6).reshape(2, 3)}
    verdicts = []
    for fn in (good, forgets):
        d = Derivation.from_jax("two", fn, cases=None)
        verdicts.append(check_vjp(d.forward, d.formulas[0].vjp, case, "x").status)
    assert verdicts == ["pass", "fail"]


def test_vmap_batching_agrees_with_one_call_each() -> None:
    d = Derivation.from_jax("ln", rules.layer_norm, cases=None, batched=True)
    case = rules.FIXED["layer_norm"]
    one = check_vjp(rules.d_layer_norm.forward, formula("layer_norm", "x").vjp, case, "x")
    many = check_vjp(d.forward, d.formulas[0].vjp, case, "x", batched=True)
    assert (one.status, many.status) == ("pass", "pass")
    assert many.numeric is not None and one.numeric is not None
    np.testing.assert_allclose(many.numeric, one.numeric, rtol=1e-6, atol=1e-9)


def test_declaration_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="wrt names 'y', which is not an input of"):
        Derivation.from_jax("lse", rules.logsumexp, cases=None, wrt=["y"])


def test_readme_jax_example_passes(tmp_path: Any) -> None:
    from gradcheck import load_derivations
    from tests.conftest import readme_block

    module = tmp_path / "logsumexp.py"
    module.write_text(readme_block("jax-example"))
    (d,) = load_derivations(str(module))
    (f,) = d.formulas
    result = run_formula(f, Settings())
    assert result.status == "pass" and result.cases == 100, result.message


def test_float32_keeps_the_stable_logsumexp_passing_and_a_mutant_failing() -> None:
    f32 = Settings(examples=12, dtype="float32")
    assert run_formula(rules.d_logsumexp.formulas[0], f32).status == "pass"
    assert run_formula(formula("layer_norm_no_mean", "x"), f32).status == "fail"


def test_an_unhashable_static_value_runs_eagerly() -> None:
    @jax.custom_vjp
    def scaled(x: Any, weights: Any) -> Any:
        return x * sum(weights)

    scaled.defvjp(lambda x, w: (scaled(x, w), w),
                  lambda w, g: (g * sum(w), None))
    d = Derivation.from_jax("scaled", scaled, cases=None, wrt=["x"])
    case = {"x": np.linspace(-1.0, 1.0, 4), "weights": [0.5, 1.5]}  # a list: not hashable
    assert check_vjp(d.forward, d.formulas[0].vjp, case, "x").status == "pass"
