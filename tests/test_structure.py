"""Structured exhaustive mode: colourings, coloured differences, and self-verification.

A colouring is checked against the brute-force Jacobian pattern of its geometry; the
structured verdict against the plain one, for right and wrong formulas and for right and
deliberately wrong declarations (a wrong declaration must never change a verdict).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck as gc
from derivations import conv2d, linear, maxpool2d
from gradcheck.structure import (
    DeclarationError,
    bind,
    dense,
    elementwise,
    rows,
    sparse,
    windows,
)

# ---------------------------------------------------------------- colourings


def window_reach(x_shape, kernel, stride, padding, dilation, mix, out_lead):
    """Brute force: J[j, i] is True when output j's window contains input i."""
    r = len(kernel)
    space, lead = x_shape[-r:], x_shape[:-r]
    outs = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(space, kernel, stride, padding, dilation, strict=True))
    olead = out_lead if mix else lead
    J = np.zeros((int(np.prod(olead + outs)), int(np.prod(x_shape))), dtype=bool)
    for lo in np.ndindex(*olead):
        for o in np.ndindex(*outs):
            for m in np.ndindex(*kernel):
                q = tuple(oo * s - p + d * mm
                          for oo, s, p, d, mm in zip(o, stride, padding, dilation, m, strict=True))
                if all(0 <= qq < n for qq, n in zip(q, space, strict=True)):
                    for li in (np.ndindex(*lead) if mix else [lo]):
                        J[np.ravel_multi_index(lo + o, olead + outs),
                          np.ravel_multi_index(li + q, x_shape)] = True
    return J, olead + outs


def assert_exact(pattern, J):
    """Members of one colour reach disjoint outputs, and owners name exactly them."""
    assert sorted(np.concatenate([pattern.members(c) for c in range(pattern.count)])) == \
        list(range(J.shape[1]))
    for c in range(pattern.count):
        expect = np.full(J.shape[0], -1)
        for i in pattern.members(c):
            reached = np.flatnonzero(J[:, i])
            assert (expect[reached] == -1).all(), f"colour {c} has overlapping members"
            expect[reached] = i
        np.testing.assert_array_equal(pattern.owners(c), expect)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_window_colouring_is_exact_and_minimal(data):
    r = data.draw(st.integers(1, 2))
    kernel = tuple(data.draw(st.lists(st.integers(1, 3), min_size=r, max_size=r)))
    stride = tuple(data.draw(st.lists(st.integers(1, 3), min_size=r, max_size=r)))
    dilation = tuple(data.draw(st.lists(st.integers(1, 2), min_size=r, max_size=r)))
    padding = tuple(data.draw(st.integers(0, k - 1)) for k in kernel)
    space = tuple(d * (k - 1) + 1 + data.draw(st.integers(0, 4))
                  for k, d in zip(kernel, dilation, strict=True))
    mix = data.draw(st.booleans())
    x_shape = (data.draw(st.integers(1, 2)), *space)
    J, y_shape = window_reach(x_shape, kernel, stride, padding, dilation, mix, (2,))
    pattern = bind(windows(kernel, stride, padding, dilation, mix=mix), x_shape, y_shape)
    assert_exact(pattern, J)
    # the lower bound is the most inputs one output reaches; the periodic colouring meets
    # it whenever some window lies wholly inside the input
    full = int(np.prod(kernel)) * (x_shape[0] if mix else 1)
    assert pattern.count >= J.sum(axis=1).max()
    if J.sum(axis=1).max() == full:
        assert pattern.count == full


def test_colour_counts_of_the_catalogue_geometries():
    assert bind(windows(3, mix=True), (3, 32, 32), (8, 30, 30)).count == 27
    assert bind(windows(3, mix=True), (16, 64, 64), (16, 62, 62)).count == 144
    assert bind(windows(2, 2), (8, 32, 32), (8, 16, 16)).count == 4
    assert bind(rows(0, 0), (16, 32), (16,)).count == 32
    assert bind(elementwise(), (5, 7), (5, 7)).count == 1
    assert bind(dense(), (4,), (3,)).count == 4


def test_rows_elementwise_dense_and_greedy_sparse_are_exact():
    J = np.zeros((3, 12), dtype=bool)  # W (3, 4): W[i, j] reaches y[i]
    for i in range(3):
        J[i, i * 4 : i * 4 + 4] = True
    assert_exact(bind(rows(0, 0), (3, 4), (3,)), J)
    assert_exact(bind(elementwise(), (2, 3), (2, 3)), np.eye(6, dtype=bool))
    assert_exact(bind(dense(), (3,), (2,)), np.ones((2, 3), dtype=bool))
    # a 1-D stencil y_j = x_j + x_{j+1} + x_{j+3}, declared as CSR and coloured greedily
    n, m = 10, 7
    Jt = np.zeros((m, n), dtype=bool)
    for j in range(m):
        Jt[j, [j, j + 1, j + 3]] = True

    def reach(x_shape, y_shape):
        cols = [np.flatnonzero(Jt[:, i]) for i in range(n)]
        return np.cumsum([0] + [c.size for c in cols]), np.concatenate(cols)

    pattern = bind(sparse(reach, "stencil"), (n,), (m,))
    assert_exact(pattern, Jt)
    assert pattern.count <= 4


@pytest.mark.parametrize("declare, x_shape, y_shape", [
    (windows(3), (2, 8, 8), (2, 5, 5)),  # windows give (6, 6)
    (windows(2, mix=False), (3, 8, 8), (4, 7, 7)),  # channels differ without mix
    (rows(0, 0), (3, 4), (4,)),
    (elementwise(), (3,), (4,)),
])
def test_declarations_that_do_not_fit_the_shapes_are_refused(declare, x_shape, y_shape):
    with pytest.raises(DeclarationError):
        bind(declare, x_shape, y_shape)


def test_bad_helper_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="stride"):
        windows(3, stride=0)
    with pytest.raises(ValueError, match="padding"):
        windows((3, 3), padding=(1,))


def test_a_structure_that_is_not_one_is_an_invalid_case():
    case = {"x": np.ones(3)}
    with pytest.raises(gc.InvalidCase, match="structure"):
        gc.check_vjp(lambda x: 2 * x, lambda dy, x: 2 * dy, case, "x", structure="windows")


# ---------------------------------------------------------------- verdicts


def conv_case(rng, T, H, K, s, k=3):
    return {"x": rng.standard_normal((T, H, H)), "W": rng.standard_normal((K, T, k, k)),
            "b": rng.standard_normal(K), "s": s}


def pool_case(rng, C, H, M, s):
    x = rng.permutation(C * H * H) * 1.25 + rng.uniform(0, 0.125, C * H * H)
    return {"x": x.reshape(C, H, H), "M": M, "N": M, "s": s}


def formula(derivation, wrt, variant):
    return next(f.vjp for f in derivation.formulas if f.wrt == wrt and f.variant == variant)


def plain_and_structured(derivation, vjp, case, wrt, structure, **options):
    plain = gc.check_vjp(derivation.forward, vjp, case, wrt, batched=True, **options)
    coloured = gc.check_vjp(derivation.forward, vjp, case, wrt, batched=True,
                            structure=structure, **options)
    return plain, coloured


WRONG = [  # (what is wrong, derivation, case, declared structure)
    ("window misses its middle tap", conv2d.conv2d, (conv_case, 3, 8, 3, 1),
     windows(2, 1, dilation=2, mix=True)),
    ("window too small for the shapes", conv2d.conv2d, (conv_case, 3, 8, 3, 1),
     windows(2, 1, mix=True)),
    ("channel mixing missed", conv2d.conv2d, (conv_case, 3, 8, 3, 1), windows(3, 1)),
    ("wrong stride, same output shape", conv2d.conv2d, (conv_case, 2, 10, 3, 2),
     windows(3, 3, padding=1, mix=True)),
    ("wrong stride", conv2d.conv2d, (conv_case, 2, 10, 3, 2), windows(3, 1, mix=True)),
    ("pool window misses its middle tap", maxpool2d.maxpool2d, (pool_case, 2, 9, 3, 1),
     windows(2, 1, dilation=2)),
    ("pool wrong stride, same output shape", maxpool2d.maxpool2d, (pool_case, 2, 10, 3, 2),
     windows(3, 3, padding=1)),
    ("linear W declared elementwise along columns", linear.linear, None, rows(1, 0)),
]


@pytest.mark.parametrize("variant", ["reference", "as-written"])
@pytest.mark.parametrize("what, derivation, make, declared", WRONG, ids=[w[0] for w in WRONG])
def test_a_wrong_declaration_never_changes_the_verdict(what, derivation, make, declared,
                                                       variant):
    rng = np.random.default_rng(7)
    if make is None:  # linear W (4, 4): y_i = sum_j W_ij x_j; rows(1, 0) says W_ij -> y_j
        case, wrt = {"W": rng.standard_normal((4, 4)), "x": rng.standard_normal(4),
                     "b": rng.standard_normal(4)}, "W"
        vjp = (lambda dy, W, x, b: np.outer(dy, x)) if variant == "reference" else \
            (lambda dy, W, x, b: np.outer(x, dy))
    else:
        case, wrt = make[0](rng, *make[1:]), "x"
        vjp = formula(derivation, "x", variant)
    plain, coloured = plain_and_structured(derivation, vjp, case, wrt, declared)
    assert coloured.mode == plain.mode == "exhaustive"
    assert any("checked without" in n for n in coloured.notes), coloured.notes
    assert coloured.status == plain.status
    assert coloured.status == ("pass" if variant == "reference" else "fail")
    np.testing.assert_array_equal(coloured.failed, plain.failed)


def test_an_unexplained_move_names_the_output():
    rng = np.random.default_rng(3)
    case = pool_case(rng, 2, 10, 3, 2)
    _, r = plain_and_structured(maxpool2d.maxpool2d, formula(maxpool2d.maxpool2d, "x",
                                "reference"), case, "x", windows(3, 3, padding=1))
    assert any("moved by" in n and "output (" in n for n in r.notes), r.notes


@pytest.mark.parametrize("vjp", [conv2d.dx_reference, conv2d.dx_as_written],
                         ids=["right", "wrong"])
def test_misattribution_is_caught(vjp):
    """Missed channel mixing: every output moves, so only (b) along a random direction or
    (c) failing elements re-measured one by one can see it."""
    rng = np.random.default_rng(3)
    case = conv_case(rng, 3, 8, 3, 1)
    _, r = plain_and_structured(conv2d.conv2d, vjp, case, "x", windows(3, 1))
    assert any("misattributed" in n or "attributed to the wrong" in n for n in r.notes), r.notes


CATALOGUE = [(conv2d.conv2d, "x"), (conv2d.conv2d, "W"), (conv2d.conv2d, "b"),
             (maxpool2d.maxpool2d, "x"), (linear.linear, "W"), (linear.linear, "b")]


@pytest.mark.parametrize("variant", ["reference", "as-written"])
@pytest.mark.parametrize("derivation, wrt", CATALOGUE,
                         ids=[f"{d.name}.d{w}" for d, w in CATALOGUE])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_declared_structure_gives_the_plain_verdict(derivation, wrt, variant, data):
    case = data.draw(derivation.cases)
    vjp = next((f.vjp for f in derivation.formulas if f.wrt == wrt and f.variant == variant),
               None)
    if vjp is None:
        return
    plain, coloured = plain_and_structured(derivation, vjp, case, wrt,
                                           derivation.structure[wrt])
    if variant == "reference":  # no false alarm: a right formula passes both ways
        assert coloured.status == plain.status == "pass", coloured.explain()
        # a right declaration is never found wrong (that would redo the check plainly and
        # make the two verdicts equal without testing the structure)
        assert not any("checked without it" in n for n in coloured.notes), coloured.notes
    elif plain.status == "fail":  # and no miss. Per-output noise is finer than L's, so
        # structured mode may also catch an error plain mode's tolerance hides (a wrong
        # gradient of 1e-13 beside inputs of 10)
        assert coloured.status == "fail" and coloured.failed.any(), coloured.explain()


def test_structured_costs_two_evaluations_per_colour_on_a_pass():
    rng = np.random.default_rng(0)
    case = conv_case(rng, 3, 32, 8, 1)
    plain, r = plain_and_structured(conv2d.conv2d, conv2d.dx_reference, case, "x",
                                    windows(3, 1, mix=True))
    assert plain.status == r.status == "pass"
    assert r.mode == "structured"
    # 2 x 27 colours, the forward at x and L at x, 1 direction x 4 (self-verification)
    assert r.evaluations == 2 * 27 + 2 + 4
    assert plain.evaluations > 2 * case["x"].size


def test_auto_mode_uses_structure_beyond_the_plain_threshold():
    rng = np.random.default_rng(0)
    case = conv_case(rng, 3, 16, 2, 1)
    r = gc.check_vjp(conv2d.forward, conv2d.dx_reference, case, "x", batched=True,
                     max_exhaustive=100, structure=windows(3, mix=True))
    assert r.mode == "structured" and r.status == "pass"
    assert not any("random directions" in n for n in r.notes)
    plain = gc.check_vjp(conv2d.forward, conv2d.dx_reference, case, "x", batched=True,
                         max_exhaustive=100)
    assert plain.mode == "directional"


# ---------------------------------------------------------------- real size


def _dx_with(index, how):
    def vjp(dy, **case):
        dx = conv2d.dx_reference(dy, **case)
        dx[index] = 0.0 if how == "zeroed" else dx[index] * 1.01
        return dx
    return vjp


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_wrong_element_of_a_real_size_conv_is_caught_and_localised(dtype):
    rng = np.random.default_rng(1)
    case = conv_case(rng, 16, 64, 16, 1)
    right = gc.check_vjp(conv2d.forward, conv2d.dx_reference, case, "x", batched=True,
                         dtype=dtype, structure=windows(3, mix=True))
    assert right.status == "pass" and right.mode == "structured"
    assert right.evaluations <= 2 * 144 + 6
    # an element whose |dx| is the median: 1 % of it is above float32's noise tolerance
    dx = np.abs(right.analytic)
    median = np.argsort(dx.ravel())[dx.size // 2]
    index = tuple(int(i) for i in np.unravel_index(median, dx.shape))
    for how in ("zeroed", "1% off"):
        r = gc.check_vjp(conv2d.forward, _dx_with(index, how), case, "x", batched=True,
                         dtype=dtype, structure=windows(3, mix=True))
        assert r.status == "fail", (how, r.explain())
        assert r.mismatches == 1 and r.worst_index == index, (how, r.explain())


# ---------------------------------------------------------------- diagnosis


@pytest.mark.parametrize("wrt, axes", [("x", "(0, 1, 2)"), ("W", "(1, 2)"), ("b", "(1, 2)")])
def test_a_missing_sum_over_output_positions_is_named(wrt, axes):
    rng = np.random.default_rng(0)
    d = conv2d.conv2d
    r = gc.check_vjp(d.forward, formula(d, wrt, "as-written"), conv_case(rng, 3, 8, 4, 1),
                     wrt, batched=True, structure=d.structure[wrt])
    assert r.status == "fail" and r.mode == "structured"
    assert f"restricted to the outputs with index 0 on output axes {axes}" in r.diagnosis


@pytest.mark.parametrize("stride", [1, 2])
def test_unaccumulated_overlapping_windows_are_named(stride):
    rng = np.random.default_rng(0)
    d = maxpool2d.maxpool2d
    r = gc.check_vjp(d.forward, formula(d, "x", "as-written"), pool_case(rng, 2, 9, 3, stride),
                     "x", batched=True, structure=d.structure["x"])
    assert r.status == "fail"
    assert "the last in row-major order reaching it" in r.diagnosis


@pytest.mark.parametrize("wrong", [
    lambda dy, **c: 1.5 * conv2d.dx_reference(dy, **c),
    lambda dy, **c: conv2d.dx_reference(dy, **c) + 1e-3,
])
def test_no_jacobian_statement_without_evidence(wrong):
    rng = np.random.default_rng(0)
    r = gc.check_vjp(conv2d.forward, wrong, conv_case(rng, 2, 7, 3, 1), "x", batched=True,
                     structure=windows(3, mix=True))
    assert r.status == "fail"
    assert "restricted" not in r.diagnosis and "one output only" not in r.diagnosis


# ---------------------------------------------------------------- elementwise, against plain

AWKWARD = st.one_of(st.floats(-10, 10, allow_subnormal=False),
                    st.sampled_from([0.0, 1e-12, -1e-12, 2.2e-16, 1e-300, 1.0, 3.5, 1e-8]))
ELEMENTWISE = {
    "abs": (np.abs, lambda dy, x: dy * np.sign(x)),
    "cube": (lambda x: x**3, lambda dy, x: dy * 3 * x**2),
    "soft abs": (lambda x: np.sqrt(x * x + 1e-12), lambda dy, x: dy * x / np.sqrt(x * x + 1e-12)),
    "steep tanh": (lambda x: np.tanh(1e4 * x), lambda dy, x: dy * 1e4 / np.cosh(1e4 * x) ** 2),
}


@pytest.mark.parametrize("wrong", [False, True], ids=["right", "1% off"])
@pytest.mark.parametrize("name", list(ELEMENTWISE))
@settings(max_examples=40, deadline=None)
@given(x=st.integers(2, 30).flatmap(lambda n: st.lists(AWKWARD, min_size=n, max_size=n)))
def test_structured_never_passes_a_wrong_formula_plain_does_not_nor_fails_a_right_one(
        name, wrong, x):
    f, df = ELEMENTWISE[name]
    vjp = (lambda dy, x: 1.01 * df(dy, x)) if wrong else df
    case = {"x": np.array(x)}
    with np.errstate(all="ignore"):
        plain = gc.check_vjp(lambda x: f(x), vjp, case, "x", batched=True)
        coloured = gc.check_vjp(lambda x: f(x), vjp, case, "x", batched=True,
                                structure=elementwise())
    # one colour for 2 or more elements; self-verification may still send a case back to
    # plain mode (a direction's step crossing a curvature the elements resolved): safe
    assert coloured.mode == "structured" or any("checked without" in n for n in coloured.notes)
    if wrong and plain.status != "pass":  # no false pass (a right formula may be resolved
        assert coloured.status != "pass", coloured.explain()  # where L's noise hid it)
    if not wrong:
        assert coloured.status != "fail", coloured.explain()
