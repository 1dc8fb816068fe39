"""Declaration forms: one backward for several gradients, several outputs, layer objects.

Each form is checked with a correct backward (pass) and a deliberately wrong one (fail,
with a counterexample), through the same runner the CLI and the plugin use.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from gradcheck import Derivation, Layer
from gradcheck.forms import Backward
from gradcheck.outputs import ZERO_UPSTREAM
from gradcheck.runner import Settings, run_formula
from gradcheck.strategies import float_arrays, index_arrays

QUICK = Settings(examples=25, seed=0)


def sizes(n: int, hi: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    return st.tuples(*[st.integers(1, hi)] * n)


def run(d: Derivation, settings: Settings = QUICK) -> dict[str, object]:
    return {f.id: run_formula(f, settings) for f in d.formulas}


# ---------------------------------------------------------------- one backward, all gradients


def attention(q, k, v):
    s = q @ k.T / np.sqrt(q.shape[1])
    p = np.exp(s - s.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)) @ v


def attention_backward(dy, q, k, v, *, centred=True):
    c = 1 / np.sqrt(q.shape[1])
    s = q @ k.T * c
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dp = dy @ v.T
    ds = p * (dp - (dp * p).sum(axis=1, keepdims=True)) if centred else p * dp
    return ds @ k * c, ds.T @ q * c, p.T @ dy


def attention_cases():
    return sizes(4).flatmap(lambda t: st.fixed_dictionaries({
        "q": float_arrays((t[0], t[2]), max_magnitude=10.0),
        "k": float_arrays((t[1], t[2]), max_magnitude=10.0),
        "v": float_arrays((t[1], t[3]), max_magnitude=10.0),
    }))


def test_one_backward_returning_a_tuple_is_one_formula_per_argument():
    d = Derivation("attention", attention, cases=attention_cases(), batched=False)
    d.backward(("q", "k", "v"), attention_backward)
    # the softmax's centring term forgotten: dq and dk wrong, dv right
    d.backward(("q", "k", "v"), lambda dy, q, k, v: attention_backward(dy, q, k, v, centred=False),
               variant="as-written", expect={"q": "fail", "k": "fail"})
    results = run(d)
    assert sorted(results) == sorted(f"attention.d{n}[{v}]" for n in "qkv"
                                     for v in ("reference", "as-written"))
    for fid, r in results.items():
        assert r.status == r.expect, (fid, r.message)
    for n in "qk":
        c = results[f"attention.d{n}[as-written]"].counterexample
        assert c is not None and c["status"] == "fail" and c["mismatches"] >= 1
        assert set(c["shapes"]) == {"q", "k", "v"}


def test_a_dict_of_gradients_by_name_and_the_decorator_form():
    d = Derivation("attention", attention, cases=attention_cases())

    @d.backward(("v", "q"))
    def backward(dy, q, k, v):
        dq, dk, dv = attention_backward(dy, q, k, v)
        return {"q": dq, "k": dk, "v": dv}  # k's entry: not declared, ignored

    assert [f.id for f in d.formulas] == ["attention.dv[reference]", "attention.dq[reference]"]
    assert all(r.status == "pass" for r in run(d).values())


def test_one_backward_call_per_case_serves_every_argument():
    d = Derivation("attention", attention, cases=attention_cases())
    d.backward(("q", "k", "v"), attention_backward)
    shared = d.formulas[0].vjp.backward
    assert isinstance(shared, Backward)
    rng = np.random.default_rng(0)
    case = {"q": rng.standard_normal((2, 3)), "k": rng.standard_normal((4, 3)),
            "v": rng.standard_normal((4, 2))}
    dy = rng.standard_normal((2, 2))
    want = attention_backward(dy, **case)
    for f, expected in zip(d.formulas, want, strict=True):
        np.testing.assert_array_equal(f.vjp(dy, **case), expected)
    assert shared.calls == 1
    d.formulas[1].vjp(dy + 1, **case)  # another upstream gradient: another call
    assert shared.calls == 2
    # through the runner: hypothesis draws the same first cases for each formula (one seed)
    results = run(d, Settings(examples=30, seed=4))
    checked = sum(r.cases for r in results.values())
    assert shared.calls - 2 < checked - 10, (shared.calls, checked)


@pytest.mark.parametrize("bad, message", [
    (lambda dy, q, k, v: attention_backward(dy, q, k, v)[:2], "returned 2 gradients; expected 3"),
    (lambda dy, q, k, v: {"q": dy}, "no gradient for ['k', 'v']"),
    (lambda dy, q, k, v: 1.0, "returned float"),
])
def test_a_backward_returning_the_wrong_structure_is_an_error_naming_it(bad, message):
    d = Derivation("attention", attention, cases=attention_cases())
    d.backward(("q", "k", "v"), bad)
    r = run_formula(d.formulas[0], Settings(examples=5))
    assert r.status == "error" and message in r.message, r.message


def test_backward_wrt_names_are_validated():
    d = Derivation("attention", attention, cases=attention_cases())
    with pytest.raises(ValueError, match="twice"):
        d.backward(("q", "q"), attention_backward)
    with pytest.raises(ValueError, match="identifiers"):
        d.backward((), attention_backward)


# ---------------------------------------------------------------- several outputs


def sigmoid(a):
    return 0.5 * (1 + np.tanh(0.5 * a))


def lstm_cell(x, h0, c0, W, U, b):
    i, f, o, g = np.split(W @ x + U @ h0 + b, 4)
    c = sigmoid(f) * c0 + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def lstm_backward(dy, x, h0, c0, W, U, b, *, through_c=True):
    dh, dc = dy
    ai, af, ao, ag = np.split(W @ x + U @ h0 + b, 4)
    i, f, o, g = sigmoid(ai), sigmoid(af), sigmoid(ao), np.tanh(ag)
    c = f * c0 + i * g
    dct = dh * o * (1 - np.tanh(c) ** 2) + (dc if through_c else 0)
    da = np.concatenate([dct * g * i * (1 - i), dct * c0 * f * (1 - f),
                         dh * np.tanh(c) * o * (1 - o), dct * i * (1 - g**2)])
    return {"x": W.T @ da, "h0": U.T @ da, "c0": dct * f, "W": np.outer(da, x),
            "U": np.outer(da, h0), "b": da}


def lstm_cases():
    return sizes(2).flatmap(lambda t: st.fixed_dictionaries({
        "x": float_arrays((t[0],), max_magnitude=3.0),
        "h0": float_arrays((t[1],), max_magnitude=3.0),
        "c0": float_arrays((t[1],), max_magnitude=3.0),
        "W": float_arrays((4 * t[1], t[0]), max_magnitude=3.0),
        "U": float_arrays((4 * t[1], t[1]), max_magnitude=3.0),
        "b": float_arrays((4 * t[1],), max_magnitude=3.0),
    }))


ARGS = ("x", "h0", "c0", "W", "U", "b")


def test_two_output_cell_right_and_with_the_second_outputs_gradient_dropped():
    d = Derivation("lstm", lstm_cell, cases=lstm_cases(), outputs=("h", "c"))
    d.backward(ARGS, lstm_backward)
    d.backward(("c0", "W"), lambda dy, **case: lstm_backward(dy, **case, through_c=False),
               variant="as-written", expect="fail")
    for fid, r in run(d).items():
        assert r.status == r.expect, (fid, r.message)
        if r.expect == "fail":  # visible only when c's upstream gradient is not zero
            c = r.counterexample
            assert c is not None and c["status"] == "fail"
            assert "c" not in c["params"].get(ZERO_UPSTREAM, "").split(","), c["params"]


def test_several_outputs_draw_zero_upstream_for_some_outputs_never_all():
    seen = []

    def forward(x):
        return {"a": 2 * x, "b": x**2, "c": np.sin(x)}

    def backward(dy, x):
        seen.append(tuple(bool(np.any(dy[k])) for k in "abc"))
        return 2 * dy["a"] + 2 * x * dy["b"] + np.cos(x) * dy["c"]

    d = Derivation("three", forward, cases=st.fixed_dictionaries(
        {"x": float_arrays((2,), max_magnitude=5.0)}), outputs=("a", "b", "c"))
    d.formula("x", backward)
    assert run_formula(d.formulas[0], Settings(examples=60, seed=2)).status == "pass"
    assert (True, True, True) in seen and (False, False, False) not in seen
    assert any(not all(s) for s in seen), "some cases zero some outputs' upstream"


@pytest.mark.parametrize("forward, message", [
    (lambda x: (x,), "returned 1 values; expected a tuple of 2 arrays"),
    (lambda x: {"h": x, "k": x}, "keys ['h', 'k']"),
    (lambda x: (x, np.arange(2)), "output 'c' has dtype int64"),
    # at the case itself the engine names it (outputs laid end to end: index 2 is c's first)
    (lambda x: (x, np.full_like(x, np.nan)),
     "forward returned a non-finite value np.float64(nan) at index (2,)"),
])
def test_a_forward_returning_the_wrong_outputs_is_an_error_naming_them(forward, message):
    d = Derivation("cell", forward, cases=st.fixed_dictionaries(
        {"x": float_arrays((2,), max_magnitude=5.0)}), outputs=("h", "c"))
    d.formula("x", lambda dy, x: dy[0])
    r = run_formula(d.formulas[0], Settings(examples=5))
    assert r.status == "error" and message in r.message, r.message


def test_a_backward_writing_into_an_upstream_gradient_is_an_error():
    def backward(dy, x):
        dh = dy[0]
        dh *= 2  # in place
        return dh / 2 + dy[1]

    d = Derivation("cell", lambda x: (x, x), cases=st.fixed_dictionaries(
        {"x": float_arrays((2,), max_magnitude=5.0)}), outputs=("h", "c"))
    d.formula("x", backward)
    r = run_formula(d.formulas[0], Settings(examples=5))
    assert r.status == "error" and "upstream gradient" in r.message, r.message


def test_several_outputs_with_batched_is_refused_at_declaration():
    with pytest.raises(ValueError, match="batched=True is not supported"):
        Derivation("cell", lambda x: (x, x), cases=st.nothing(), outputs=("h", "c"), batched=True)


# ---------------------------------------------------------------- layer objects


class Dense:
    """A layer as numpy libraries write them: parameters and gradients in dicts on the object,
    the input cached by the forward for the backward."""

    def __init__(self, n_in, n_out, wrong_bias=False):
        rng = np.random.default_rng(0)
        self.params = {"W": rng.standard_normal((n_out, n_in)), "b": np.zeros(n_out)}
        self.grads = {}
        self.wrong_bias = wrong_bias

    def forward(self, x):
        self.x = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dy):
        self.grads["W"] = dy.T @ self.x
        self.grads["b"] = dy.mean(axis=0) if self.wrong_bias else dy.sum(axis=0)
        return dy @ self.params["W"]


def dense_cases(with_params=True, wrong_bias=False):
    def build(t):
        batch, n_in, n_out = t
        entries = {"x": float_arrays((batch, n_in)), "n_in": st.just(n_in),
                   "n_out": st.just(n_out), "wrong_bias": st.just(wrong_bias)}
        if with_params:
            entries |= {"W": float_arrays((n_out, n_in)), "b": float_arrays((n_out,))}
        return st.fixed_dictionaries(entries)

    return sizes(3).flatmap(build)


def dense_backward(layer, dy):
    return layer.backward(dy), layer.grads["W"], layer.grads["b"]


@pytest.mark.parametrize("with_params", [True, False])
def test_layer_object_with_parameters_by_path(with_params):
    d = Layer("dense", Dense, cases=dense_cases(with_params), inputs="x",
              params={"W": "params.W", "b": "params.b"})
    d.backward(("x", "W", "b"), dense_backward)
    for fid, r in run(d).items():
        assert r.status == "pass", (fid, r.message)
        assert r.cases == QUICK.examples


def test_layer_object_with_a_wrong_bias_gradient_fails_on_that_parameter_only():
    d = Layer("dense", Dense, cases=dense_cases(wrong_bias=True), inputs="x",
              params={"W": "params.W", "b": "params.b"})
    d.backward(("x", "W", "b"), dense_backward, expect={"b": "fail"})
    results = run(d)
    for fid, r in results.items():
        assert r.status == r.expect, (fid, r.message)
    c = results["dense.db[reference]"].counterexample
    assert c["shapes"]["x"][0] >= 2 and c["params"]["wrong_bias"] is True  # a batch of 2 or more


class Accumulating(Dense):
    """Gradients accumulated on the object (+=): state that must not leak between cases."""

    def backward(self, dy):
        self.grads.setdefault("W", 0)
        self.grads["W"] = self.grads["W"] + dy.T @ self.x
        return dy @ self.params["W"]


class Stepping(Dense):
    """An SGD step inside the backward: it changes the parameter being checked."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.params["W"] = self.params["W"] - 0.1 * self.grads["W"]
        return dx


def test_each_backward_runs_on_a_fresh_object_so_accumulated_gradients_do_not_leak():
    d = Layer("acc", Accumulating, cases=dense_cases(), inputs="x",
              params={"W": "params.W", "b": "params.b"})
    d.backward("W", lambda layer, dy: (layer.backward(dy), layer.grads["W"])[1])
    assert run_formula(d.formulas[0], QUICK).status == "pass"


def test_a_backward_that_updates_a_parameter_is_an_error_naming_it():
    d = Layer("sgd", Stepping, cases=dense_cases(), inputs="x",
              params={"W": "params.W", "b": "params.b"})
    d.backward(("x", "W"), lambda layer, dy: (layer.backward(dy), layer.grads["W"]))
    r = run_formula(d.formulas[0], Settings(examples=5))
    assert r.status == "error" and "changed the parameter 'W' (layer.params.W)" in r.message


class SteppingInPlace(Dense):
    def backward(self, dy):
        dx = super().backward(dy)
        self.params["W"] -= 0.1 * self.grads["W"]  # an SGD step written in place
        return dx


def test_a_backward_that_updates_a_parameter_in_place_is_an_error_naming_it():
    """The backward's object held the case's own array, so an in-place step changed both
    and compared equal: only rebinding the parameter was caught."""
    d = Layer("sgd_in_place", SteppingInPlace, cases=dense_cases(), inputs="x",
              params={"W": "params.W", "b": "params.b"})
    d.backward(("x", "W"), lambda layer, dy: (layer.backward(dy), layer.grads["W"]))
    r = run_formula(d.formulas[0], Settings(examples=5))
    assert r.status == "error" and "changed the parameter 'W' (layer.params.W)" in r.message


def test_several_outputs_may_leave_the_domain_at_a_perturbed_input():
    """A step that leaves log's domain is the judge's business, as for one output: it was
    an error raised by the outputs' own finiteness check at every evaluation."""
    d = Derivation("two", lambda x: (np.log(x), 2 * x),
                   cases=st.just({"x": np.array([1e-6, 1.0])}), outputs=("a", "b"))
    d.backward(("x",), lambda dy, x: (dy[0] / x + 2 * dy[1],))
    assert run_formula(d.formulas[0], Settings(examples=1)).status == "pass"


class Counted(Dense):
    built = 0

    def __init__(self, n_in, n_out, wrong_bias=False):
        type(self).built += 1
        super().__init__(n_in, n_out, wrong_bias)


@pytest.mark.parametrize("reusable", [False, True])
def test_reusable_layers_are_built_once_per_configuration(reusable):
    Counted.built = 0
    d = Layer("dense", Counted, cases=dense_cases(), inputs="x", reusable=reusable,
              params={"W": "params.W", "b": "params.b"})
    d.formula("x", lambda layer, dy: layer.backward(dy))
    r = run_formula(d.formulas[0], Settings(examples=10, seed=1))
    assert r.status == "pass", r.message
    evaluations = 10 * 4  # at least 2n + 2 forwards per case, n >= 1
    if reusable:  # one per case for the forwards (fewer when configurations repeat), one
        assert Counted.built <= 2 * (10 + 3)  # per backward; a few replays besides
    else:
        assert Counted.built > evaluations


def test_layer_parameter_accessors_getter_setter_pairs_and_shape_checks():
    def get(layer):
        return layer.params["W"]

    def put(layer, value):
        layer.params["W"] = value

    d = Layer("dense", Dense, cases=dense_cases(), inputs="x",
              params={"W": (get, put), "b": "params.b"})
    d.formula("W", lambda layer, dy: (layer.backward(dy), layer.grads["W"])[1])
    assert run_formula(d.formulas[0], QUICK).status == "pass"

    wrong = Layer("dense", lambda n_in, n_out, wrong_bias: Dense(n_out, n_in),
                  cases=dense_cases(), inputs="x", params={"W": "params.W", "b": "params.b"})
    wrong.formula("x", lambda layer, dy: layer.backward(dy))
    r = run_formula(wrong.formulas[0], Settings(examples=10))
    assert r.status == "error" and "case['W'] has shape" in r.message, r.message
    with pytest.raises(ValueError, match="getter, setter"):
        Layer("dense", Dense, cases=dense_cases(), inputs="x", params={"W": 3})
    with pytest.raises(ValueError, match="batched=True"):
        Layer("dense", Dense, cases=dense_cases(), inputs="x", batched=True)


class Cell:
    """A two-output recurrent cell object: h = tanh(W x) * c0, c = W x + c0."""

    def __init__(self, drop_dc=False):
        self.drop_dc = drop_dc

    def forward(self, x, c0):
        self.x, self.c0, self.a = x, c0, self.W @ x
        return np.tanh(self.a) * c0, self.a + c0

    def backward(self, dh, dc):
        da = dh * c0_scale(self) + (0 if self.drop_dc else dc)
        return {"x": self.W.T @ da, "c0": dh * np.tanh(self.a) + dc, "W": np.outer(da, self.x)}


def c0_scale(cell):
    return cell.c0 * (1 - np.tanh(cell.a) ** 2)


def test_layer_with_two_outputs_and_its_second_outputs_gradient_dropped():
    cases = sizes(2).flatmap(lambda t: st.fixed_dictionaries({
        "x": float_arrays((t[0],), max_magnitude=3.0),
        "c0": float_arrays((t[1],), max_magnitude=3.0),
        "W": float_arrays((t[1], t[0]), max_magnitude=3.0),
        "drop_dc": st.just(False),
    }))
    good = Layer("cell", Cell, cases=cases, inputs=("x", "c0"), params=("W",),
                 outputs=("h", "c"))
    good.backward(("x", "c0", "W"), lambda layer, dy: layer.backward(*dy))
    assert all(r.status == "pass" for r in run(good).values())

    bad = Layer("cell", Cell, cases=cases.map(lambda c: {**c, "drop_dc": True}),
                inputs=("x", "c0"), params=("W",), outputs=("h", "c"))
    bad.backward(("x", "c0", "W"), lambda layer, dy: layer.backward(*dy))
    results = run(bad)
    assert results["cell.dc0[reference]"].status == "pass"
    for n in ("x", "W"):
        assert results[f"cell.d{n}[reference]"].status == "fail"


class Embedding:
    def __init__(self, vocabulary, width, accumulate=True):
        self.weight = np.random.default_rng(1).standard_normal((vocabulary, width))
        self.accumulate = accumulate

    def forward(self, ids):
        self.ids = ids
        return self.weight[ids]

    def backward(self, dy):
        self.dweight = np.zeros_like(self.weight)
        if self.accumulate:
            np.add.at(self.dweight, self.ids, dy)
        else:  # a fancy-indexed += counts a repeated id once
            self.dweight[self.ids] += dy


def test_embedding_with_repeated_ids_right_and_with_a_fancy_indexed_add():
    def cases(accumulate):
        return sizes(3).flatmap(lambda t: st.fixed_dictionaries({
            "ids": index_arrays((t[0] + 1,), t[1]),  # at least one id twice
            "vocabulary": st.just(t[1]), "width": st.just(t[2]),
            "accumulate": st.just(accumulate)}))

    def backward(layer, dy):
        layer.backward(dy)
        return layer.dweight

    good = Layer("embedding", Embedding, cases=cases(True), inputs="ids", params=("weight",))
    good.formula("weight", backward)
    bad = Layer("embedding", Embedding, cases=cases(False), inputs="ids", params=("weight",))
    bad.formula("weight", backward, variant="as-written", expect="fail")
    assert run_formula(good.formulas[0], QUICK).status == "pass"
    r = run_formula(bad.formulas[0], QUICK)
    assert r.status == "fail" and r.counterexample["diagnosis"], r.message
    ids = r.counterexample["params"]["ids"]
    assert r.cases == 1 and "array([0, 0])" == ids  # fails on the first case; shrunk


def test_a_new_backward_never_gets_the_gradients_kept_for_an_old_one():
    import gc

    case = {"x": np.array([1.0, 2.0]), "y": np.array([3.0, 4.0])}
    dy = np.array([0.5, -1.0])
    for factor in (2.0, 3.0, 4.0):
        d = Derivation("sum", lambda x, y: 2 * x + y, cases=st.nothing())
        d.backward(("x", "y"), lambda dy, x, y, k=factor: (k * dy, dy))
        np.testing.assert_array_equal(d.formulas[0].vjp(dy, **case), factor * dy)
        del d  # its kept gradients for 'y' are never taken
        gc.collect()


def test_layer_backward_writing_into_dy_or_forward_into_a_parameter_is_an_error():
    class Scaling(Dense):
        def forward(self, x):
            if self.wrong_bias:  # here: the forward normalises its weight in place
                self.params["W"] /= 2
            return super().forward(x)

    d = Layer("dense", Scaling, cases=dense_cases(wrong_bias=True), inputs="x",
              params={"W": "params.W", "b": "params.b"})
    d.formula("x", lambda layer, dy: layer.backward(dy))
    r = run_formula(d.formulas[0], Settings(examples=5))
    assert r.status == "error" and "modified its input 'W' in place" in r.message, r.message

    def into_dy(layer, dy):
        dy *= 2
        return layer.backward(dy / 2)

    d = Layer("dense", Dense, cases=dense_cases(), inputs="x",
              params={"W": "params.W", "b": "params.b"})
    d.formula("x", into_dy)
    r = run_formula(d.formulas[0], Settings(examples=5))
    assert r.status == "error" and "upstream gradient" in r.message, r.message
    with pytest.raises(ValueError, match="identifiers"):
        Layer("dense", Dense, cases=dense_cases(), inputs="x", params=("params.W",))


class Dropout:
    """Draws its mask from its own generator at every forward: state that changes."""

    def __init__(self, p=0.5):
        self.rng, self.p = np.random.default_rng(7), p

    def forward(self, x):
        self.mask = (self.rng.random(x.shape) >= self.p) / (1 - self.p)
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


@pytest.mark.parametrize("reusable", [False, True])
def test_a_forward_that_changes_its_objects_state_needs_a_fresh_object(reusable):
    cases = st.fixed_dictionaries({"x": float_arrays((4,), max_magnitude=10.0)})
    d = Layer("dropout", Dropout, cases=cases, inputs="x", reusable=reusable)
    d.formula("x", lambda layer, dy: layer.backward(dy))
    r = run_formula(d.formulas[0], Settings(examples=10))
    if reusable:  # declared reusable wrongly: each forward draws another mask
        assert r.status == "error" and "nondeterministic" in r.message, r.message
    else:
        assert r.status == "pass", r.message


def test_the_layer_declaration_agrees_with_the_wrapper_it_replaces():
    """Before: a make(**case) helper and one index-picking formula per argument, each running
    the whole backward again (12 lines). Now: the Layer declaration (4 lines)."""
    cases = dense_cases(wrong_bias=True)

    def make(x, n_in, n_out, wrong_bias, W, b):
        layer = Dense(n_in, n_out, wrong_bias)
        layer.params["W"], layer.params["b"] = W, b
        return layer, layer.forward(x)

    def grads(dy, **case):
        layer, _ = make(**case)
        dx = layer.backward(dy)
        return dx, layer.grads["W"], layer.grads["b"]

    wrapped = Derivation("dense", lambda **case: make(**case)[1], cases=cases)
    wrapped.formula("x", lambda dy, **case: grads(dy, **case)[0])
    wrapped.formula("W", lambda dy, **case: grads(dy, **case)[1])
    wrapped.formula("b", lambda dy, **case: grads(dy, **case)[2])

    layer = Layer("dense", Dense, cases=cases, inputs="x",
                  params={"W": "params.W", "b": "params.b"})
    layer.backward(("x", "W", "b"), lambda layer, dy: (
        layer.backward(dy), layer.grads["W"], layer.grads["b"]))

    before, after = run(wrapped), run(layer)
    assert {k: r.status for k, r in before.items()} == {k: r.status for k, r in after.items()}
    assert after["dense.db[reference]"].status == "fail"
    assert before["dense.db[reference]"].counterexample["shapes"] == \
        after["dense.db[reference]"].counterexample["shapes"]


def test_positional_only_callables_are_called_as_the_engine_calls_them():
    """As guard.bind does: positional-only parameters get the case's values by name (the
    order of hypothesis's fixed_dictionaries keys is not reliable from draw to draw)."""

    def forward(x, /):
        return np.sin(x), np.cos(x)

    def backward(dy, x, /):
        return dy[0] * np.cos(x) - dy[1] * np.sin(x)

    d = Derivation("trig", forward, outputs=("s", "c"), cases=st.fixed_dictionaries(
        {"x": float_arrays((2,), max_magnitude=5.0)}))
    d.backward("x", backward)
    assert run_formula(d.formulas[0], QUICK).status == "pass"
