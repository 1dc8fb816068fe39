"""gradcheck.torch: torch.autograd.Functions checked through the engine, side by side with
torch.autograd.gradcheck on the same Functions."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gradcheck import Derivation, check_vjp  # noqa: E402
from gradcheck.numeric import BATCHED_ARGUMENT  # noqa: E402
from gradcheck.runner import Settings, run_formula  # noqa: E402
from tests.fixtures import torch_layers as layers  # noqa: E402

QUICK = Settings(examples=30)

# (derivation, input, kind of bug, torch.autograd.gradcheck's verdict at the FIXED case)
MUTANTS = [
    ("linear_sign", "W", "sign", "fail"),
    ("linear_scale", "b", "scale", "fail"),
    ("layer_norm_no_mean", "x", "missing term", "fail"),
    ("gate_swapped", "x", "wrong input order", "fail"),
    ("max_pool_assign", "x", "stride-dependent pooling", "pass"),
    ("batch_norm_no_xhat", "x", "batch norm, gamma 1e-6", "pass"),
]
CORRECT = ["linear", "gate", "layer_norm", "batch_norm", "max_pool", "gelu"]


def formula(name: str, wrt: str) -> Any:
    return next(f for f in getattr(layers, name).formulas if f.wrt == wrt)


@pytest.mark.parametrize("name", CORRECT)
def test_correct_backwards_pass_here_and_in_torch(name: str) -> None:
    for f in getattr(layers, name).formulas:
        result = run_formula(f, QUICK)
        assert result.status == "pass", (f.id, result.message, result.counterexample)
    assert layers.torch_gradcheck(name) == "pass"


@pytest.mark.parametrize(("name", "wrt", "kind", "torch_verdict"), MUTANTS,
                         ids=[m[2] for m in MUTANTS])
def test_every_mutant_fails_with_a_counterexample(name: str, wrt: str, kind: str,
                                                 torch_verdict: str) -> None:
    result = run_formula(formula(name, wrt), QUICK)
    assert result.status == "fail", (kind, result.status, result.message)
    assert result.counterexample is not None and result.counterexample["mismatches"] > 0
    # torch.autograd.gradcheck at one typical shape: catches the first four, misses the
    # overlap-only pooling bug (stride == kernel there) and the bug hidden by gamma 1e-6
    assert layers.torch_gradcheck(name) == torch_verdict
    assert layers.torch_gradcheck(name, fast_mode=True) == torch_verdict


def test_small_gamma_bug_is_caught_at_torch_s_own_case() -> None:
    case = layers.FIXED["batch_norm_no_xhat"]
    d = layers.batch_norm_no_xhat
    bad = check_vjp(d.forward, formula("batch_norm_no_xhat", "x").vjp, case, "x")
    good = check_vjp(layers.batch_norm.forward, formula("batch_norm", "x").vjp, case, "x")
    assert (bad.status, good.status) == ("fail", "pass")
    assert bad.max_abs_error < 1e-5  # below torch's atol: why torch passes it


def test_pooling_bug_needs_an_overlapping_stride() -> None:
    f = formula("max_pool_assign", "x")
    result = run_formula(f, QUICK)
    params = result.counterexample["params"]
    assert params["s"] < params["k"]
    tiled = check_vjp(f.derivation.forward, f.vjp, layers.FIXED["max_pool_assign"], "x")
    assert tiled.status == "pass"  # at torch's case (k = s = 2) the bug does not show


def test_float32_runs_keep_correct_passing_and_mutants_failing() -> None:
    f32 = Settings(examples=20, dtype="float32")
    for name in ("layer_norm", "batch_norm", "gelu"):
        for f in getattr(layers, name).formulas:
            assert run_formula(f, f32).status == "pass", f.id
    assert run_formula(formula("layer_norm_no_mean", "x"), f32).status == "fail"


def _batched_call(d: Derivation, case: dict[str, Any], wrt: str, X: np.ndarray) -> np.ndarray:
    token = BATCHED_ARGUMENT.set(wrt)
    try:
        return np.asarray(d.forward(**{**case, wrt: X}))
    finally:
        BATCHED_ARGUMENT.reset(token)


@pytest.mark.parametrize(("name", "wrt"), [("layer_norm", "x"), ("linear", "W"),
                                           ("max_pool", "x"), ("gate", "z")])
def test_vmap_rows_agree_with_one_apply_each(name: str, wrt: str) -> None:
    d = getattr(layers, name)
    assert d.batched  # new-style and old-style Functions alike
    case = layers.FIXED[name]
    X = np.stack([case[wrt], case[wrt] + 0.25, case[wrt] * 2])
    batched = _batched_call(d, case, wrt, X)
    rows = np.stack([d.forward(**{**case, wrt: row}) for row in X])
    np.testing.assert_allclose(batched, rows, rtol=4 * np.finfo(np.float64).eps, atol=0)
    f = next(f for f in d.formulas if f.wrt == wrt)
    one = check_vjp(d.forward, f.vjp, case, wrt, batched=False)
    many = check_vjp(d.forward, f.vjp, case, wrt, batched=True)
    assert (one.status, many.status) == ("pass", "pass")


class _Itemised(torch.autograd.Function):
    """A forward torch.vmap cannot run (.item() of a batched tensor)."""

    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        ctx.save_for_backward(x)
        return x * x.sum().item()

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:
        (x,) = ctx.saved_tensors
        return g * x.sum().item() + (g * x).sum()


def test_a_forward_vmap_cannot_run_falls_back_to_one_apply_a_row() -> None:
    case = {"x": np.linspace(-1.0, 2.0, 6).reshape(2, 3)}
    d = Derivation.from_torch("itemised", _Itemised, cases=None)
    X = np.stack([case["x"], case["x"] + 1.0])
    rows = np.stack([d.forward(x=row) for row in X])
    np.testing.assert_array_equal(_batched_call(d, case, "x", X), rows)
    assert check_vjp(d.forward, d.formulas[0].vjp, case, "x", batched=True).status == "pass"
    strict = Derivation.from_torch("itemised", _Itemised, cases=None, batched="vmap")
    with pytest.raises(RuntimeError):
        _batched_call(strict, case, "x", X)


def test_reports_name_framework_and_device() -> None:
    d = layers.gelu
    assert d.runs_on.startswith(f"torch {torch.__version__} on cpu")
    assert run_formula(d.formulas[0], Settings(examples=3)).to_dict()["runs_on"] == d.runs_on


# ---------------------------------------------------------------- torch's contract, named


def _case() -> dict[str, Any]:
    return {"x": np.linspace(-1.0, 1.0, 6).reshape(2, 3), "z": np.linspace(0.5, 2.0, 6)
            .reshape(2, 3)}


def _pair(backward: Any, **options: Any) -> Derivation:
    """A y = x * sin(z) Function with the given backward."""

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, z: Any) -> Any:
            ctx.save_for_backward(x, z)
            return x * torch.sin(z)

    Fn.backward = staticmethod(backward)  # type: ignore[method-assign]
    return Derivation.from_torch("pair", Fn, cases=None, **options)


def _check(d: Derivation, wrt: str = "x") -> Any:
    f = next(f for f in d.formulas if f.wrt == wrt)
    return check_vjp(d.forward, f.vjp, _case(), wrt)


def _right(ctx: Any, g: Any) -> Any:
    x, z = ctx.saved_tensors
    return g * torch.sin(z), g * x * torch.cos(z)


@pytest.mark.parametrize(("backward", "words"), [
    (lambda ctx, g: _right(ctx, g)[0], "returned 1 gradient(s); its forward takes 2"),
    (lambda ctx, g: (_right(ctx, g)[0], None), "gradient 1 (input 'z') is None"),
    (lambda ctx, g: (_right(ctx, g)[0].float(), _right(ctx, g)[1]), "dtype torch.float32"),
    (lambda ctx, g: (_right(ctx, g)[0][:1, :2], _right(ctx, g)[1]), "has shape [1, 2]"),
    (lambda ctx, g: (_right(ctx, g)[0], _right(ctx, g)[1] + 0 * g.mul_(2.0)),
     "wrote into grad_output[0] in place"),
    (lambda ctx, g: (_right(ctx, g)[0], _right(ctx, g)[1] + 0 * ctx.saved_tensors[1].add_(0.5)),
     "modified saved tensor 1"),
], ids=["count", "None", "dtype", "shape", "grad_output", "saved"])
def test_backward_contract_errors_name_the_function_and_input(backward: Any, words: str) -> None:
    result = _check(_pair(backward))
    assert result.status == "error" and words in result.message, result.message
    assert "Fn.backward" in result.message or "grad_output" in result.message


def test_a_broadcastable_gradient_is_summed_as_torch_does_not_an_error() -> None:
    def backward(ctx: Any, g: Any) -> Any:
        dx, dz = _right(ctx, g)
        return dx, torch.stack([dz, dz]) / 2  # shape (2, 2, 3): torch sums it to (2, 3)

    assert _check(_pair(backward), "z").status == "pass"


def test_needs_input_grad_and_once_differentiable_behave_as_in_torch() -> None:
    seen = []

    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: Any) -> Any:
        seen.append(tuple(ctx.needs_input_grad))
        x, z = ctx.saved_tensors
        dz = g * x * torch.cos(z) if ctx.needs_input_grad[1] else None
        return g * torch.sin(z), dz

    d = _pair(backward, wrt=["x"])  # z is a tensor that does not require grad
    assert [f.wrt for f in d.formulas] == ["x"]
    assert _check(d).status == "pass" and seen[-1] == (True, False)


def test_several_outputs_and_mark_non_differentiable() -> None:
    class SinAndArgmax(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            y, where = torch.sin(x), x.argmax(-1)
            ctx.mark_non_differentiable(where)
            return y, x ** 2, where

        @staticmethod
        def backward(ctx: Any, gy: Any, gsq: Any, gwhere: Any) -> Any:
            (x,) = ctx.saved_tensors
            return gy * torch.cos(x) + 2 * x * gsq

    class ForgetsSecondOutput(SinAndArgmax):
        @staticmethod
        def backward(ctx: Any, gy: Any, gsq: Any, gwhere: Any) -> Any:
            (x,) = ctx.saved_tensors
            return gy * torch.cos(x)

    class SquareMarkedNonDifferentiable(SinAndArgmax):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            y, sq, where = SinAndArgmax.forward(ctx, x)
            ctx.mark_non_differentiable(sq, where)
            return y, sq, where

    case = {"x": np.linspace(-2.0, 2.0, 6).reshape(2, 3)}
    verdicts = []
    for fn in (SinAndArgmax, ForgetsSecondOutput, SquareMarkedNonDifferentiable):
        d = Derivation.from_torch("two", fn, cases=None)
        verdicts.append(check_vjp(d.forward, d.formulas[0].vjp, case, "x").status)
    assert verdicts == ["pass", "fail", "fail"]


def test_a_plain_function_of_tensors_through_its_custom_functions() -> None:
    def block(x: Any, W: Any, b: Any) -> Any:
        return layers.GELU.apply(layers.Linear.apply(x, W, b))

    d = Derivation.from_torch("block", block, cases=layers.linear_cases())
    assert [f.wrt for f in d.formulas] == ["x", "W", "b"]
    for f in d.formulas:
        assert run_formula(f, Settings(examples=15)).status == "pass", f.id


def test_declaration_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="wrt names 'y', which is not an input of"):
        Derivation.from_torch("lin", layers.Linear, cases=None, wrt=["y"])
    with pytest.raises(ValueError, match="batched must be one of"):
        Derivation.from_torch("lin", layers.Linear, cases=None, batched="sometimes")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            Derivation.from_torch("lin", layers.Linear, cases=None, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch sees none")
def test_on_cuda_the_device_computes_in_float32() -> None:
    d = Derivation.from_torch("ln", layers.LayerNorm, cases=layers.norm_cases())
    bad = Derivation.from_torch("ln", layers.LayerNormNoMean, cases=layers.norm_cases(),
                                variant="as-written")
    assert d.dtype == "float32" and "on cuda" in d.runs_on
    for f in d.formulas:
        assert run_formula(f, QUICK).status == "pass", f.id
    assert run_formula(next(f for f in bad.formulas if f.wrt == "x"), QUICK).status == "fail"


def test_gradcheck_alone_does_not_import_torch() -> None:
    code = ("import sys, gradcheck; from gradcheck import Derivation, check_vjp; "
            "import gradcheck.runner, gradcheck.plugin, derivations; "
            "gradcheck.load_derivations('derivations/linear.py'); "
            "print(sorted(m for m in ('torch', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_gelu_fixture_matches_torch_s_own_gelu() -> None:
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    ref = torch.nn.functional.gelu(x)
    assert torch.allclose(layers.GELU.apply(x), ref, rtol=0, atol=1e-15)


# ---------------------------------------------------------------- the README's examples


def test_readme_torch_example_is_caught_with_a_counterexample(tmp_path: Any) -> None:
    from gradcheck import load_derivations
    from tests.conftest import readme_block

    module = tmp_path / "layer_norm.py"
    module.write_text(readme_block("torch-example"))
    (d,) = load_derivations(str(module))
    results = {f.wrt: run_formula(f, Settings()) for f in d.formulas}
    assert {k: r.status for k, r in results.items()} == \
        {"x": "fail", "gamma": "pass", "beta": "pass"}
    bad = results["x"]
    assert bad.failing_case is not None and bad.counterexample["mismatches"] > 0
    assert bad.failing_result is not None and "Mismatched elements" in bad.failing_result.explain()


def test_readme_plugin_example_over_a_module_of_torch_functions(
        pytester: pytest.Pytester) -> None:
    from tests.conftest import readme_block

    pytester.path.joinpath("layer_norm.py").write_text(readme_block("torch-example"))
    command = readme_block("torch-plugin-example").split("#")[0].split()
    assert command[:2] == ["pytest", "--gradcheck"]
    result = pytester.runpytest_subprocess(*command[1:], "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=2)
    assert f"ran on torch {torch.__version__} on cpu: layer_norm" in result.stdout.str()


def test_one_backward_call_per_case_serves_every_input() -> None:
    calls = []

    class Counted(layers.Linear):
        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            calls.append(1)
            return layers.Linear.backward(ctx, g)

    d = Derivation.from_torch("counted", Counted, cases=None)
    case = layers.FIXED["linear"]
    g = np.random.default_rng(1).standard_normal((4, 5))
    grads = [f.vjp(g, **case) for f in d.formulas]
    assert len(calls) == 1 and [a.shape for a in grads] == [(4, 3), (3, 5), (5,)]


def test_a_forward_writing_into_its_input_is_an_error() -> None:
    class Scales(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            return x.mul_(2.0)  # in place, without mark_dirty

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            return 2 * g

    d = Derivation.from_torch("scales", Scales, cases=None)
    result = check_vjp(d.forward, d.formulas[0].vjp, {"x": np.ones((2, 2))}, "x")
    assert result.status == "error" and "forward modified its input 'x'" in result.message


def test_without_torch_the_declaration_says_what_to_install() -> None:
    code = ("import sys; sys.modules['torch'] = None; from gradcheck import Derivation\n"
            "try:\n    Derivation.from_torch('f', object, cases=None)\n"
            "except ModuleNotFoundError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'gradcheck[torch]'" in out.stdout, out.stderr


def test_worker_processes_agree_with_a_serial_run_over_torch_functions() -> None:
    from gradcheck import collect_formulas
    from gradcheck.runall import run_all

    modules = ["tests/fixtures/torch_layers.py"]
    formulas = [f for f in collect_formulas(modules) if f.derivation.name.startswith("gate")]
    settings = Settings(examples=5)
    serial = run_all(formulas, settings)
    parallel = run_all(formulas, settings, jobs=2)
    assert [(r.id, r.status, r.cases) for r in parallel.results] == \
        [(r.id, r.status, r.cases) for r in serial.results]
