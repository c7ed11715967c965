import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.test_util
import numpy as np
import pytest

import neuralde as nde
import neuralde.penalties as penalties


class Params(eqx.Module):
    w: jax.Array
    c: jax.Array
    steps: jax.Array  # integer: not a parameter
    scale: float = eqx.field(static=True)
    nested: tuple = ()


def _params(seed=0):
    # NumPy's generator: JAX's would compile anew for each shape, slowly.
    rng = np.random.default_rng(seed)
    return Params(
        w=jnp.asarray(rng.normal(size=(3, 2))),
        c=jnp.asarray(rng.normal(size=2) + 1j * rng.normal(size=2)),
        steps=jnp.arange(4),
        scale=5.0,
        nested=(jnp.array([0.5, -2.0]), "label"),
    )


def _field(layers=4, seed=0):
    f = nde.fields.MLP(3, layers=layers, key=jr.PRNGKey(seed))
    bias = jnp.asarray(np.random.default_rng(seed).normal(size=(layers, 3)))
    return eqx.tree_at(lambda f: f.bias, f, bias)


def test_l1_l2_elastic_net_closed_forms():
    p = _params()
    floats = [np.asarray(p.w), np.asarray(p.c), np.asarray(p.nested[0])]
    sq = sum(np.sum(np.abs(x) ** 2) for x in floats)
    ab = sum(np.sum(np.abs(x)) for x in floats)
    np.testing.assert_allclose(penalties.l2(p), sq / 2, rtol=1e-14)
    np.testing.assert_allclose(penalties.l1(p), ab, rtol=1e-14)
    np.testing.assert_allclose(
        penalties.elastic_net(p, l1_ratio=0.3), 0.3 * ab + 0.7 * sq / 2, rtol=1e-14
    )
    # One name per function: no `weight_decay` alias of `l2`.
    assert not hasattr(penalties, "weight_decay")
    # A tree without inexact arrays costs nothing.
    assert penalties.l2({"n": jnp.arange(3), "s": "x"}) == 0
    assert penalties.l1([]) == 0


def test_l2_gradient_is_the_parameters():
    layer = eqx.nn.Linear(3, 2, key=jr.PRNGKey(0))
    grads = eqx.filter_grad(penalties.l2)(layer)
    np.testing.assert_allclose(grads.weight, layer.weight, rtol=1e-14)
    np.testing.assert_allclose(grads.bias, layer.bias, rtol=1e-14)


def test_time_smoothness_of_a_field():
    f = _field()
    W, b = np.asarray(f.operator.weight), np.asarray(f.bias)
    assert W.shape == (4, 3, 3) and b.shape == (4, 3)
    expected = np.sum(np.diff(W, axis=0) ** 2) + np.sum(np.diff(b, axis=0) ** 2)
    np.testing.assert_allclose(penalties.time_smoothness(f), expected, rtol=1e-14)
    np.testing.assert_allclose(
        penalties.time_smoothness(f, layers=4), expected, rtol=1e-14
    )
    # Constant in time: zero.
    assert penalties.time_smoothness(_field(layers=1)) == 0
    first = (np.repeat(W[:1], 4, axis=0), np.repeat(b[:1], 4, axis=0))
    same = eqx.tree_at(lambda f: (f.operator.weight, f.bias), f, first)
    assert penalties.time_smoothness(same) == 0


def test_time_smoothness_non_layered_arrays():
    f = _field()
    alone = penalties.time_smoothness(f)
    # A 0-d array has no layer axis and adds nothing.
    assert penalties.time_smoothness((f, jnp.array(3.0))) == alone
    # An unstacked layer next to the field: the layer axis is ambiguous without
    # `layers=`; with it, arrays of another leading length are left out.
    model = (f, eqx.nn.Linear(3, 5, key=jr.PRNGKey(1)))
    with pytest.raises(ValueError, match=r"lengths \[4, 5\].*Pass `layers=`"):
        penalties.time_smoothness(model)
    np.testing.assert_allclose(
        penalties.time_smoothness(model, layers=4), alone, rtol=1e-14
    )


def test_gradients_against_finite_differences():
    f = _field(layers=3)
    W = f.operator.weight

    def loss(W, b):
        g = eqx.tree_at(lambda g: (g.operator.weight, g.bias), f, (W, b))
        return penalties.time_smoothness(g) + penalties.elastic_net(g, l1_ratio=0.4)

    jax.test_util.check_grads(jax.jit(loss), (W, f.bias), order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: penalties.elastic_net(p, l1_ratio=1.5), r"lie in \[0, 1\]"),
        (lambda p: penalties.elastic_net(p, l1_ratio=-0.1), "got -0.1"),
        (lambda p: penalties.time_smoothness(p, layers=0), "positive integer"),
        (lambda p: penalties.time_smoothness(p, layers=2.0), "positive integer"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(_params())


def test_bad_l1_ratio_under_jit():
    p = _params()
    net = eqx.filter_jit(lambda p, r: penalties.elastic_net(p, l1_ratio=r))
    assert jnp.isfinite(net(p, jnp.array(0.5)))
    with pytest.raises(RuntimeError, match="l1_ratio` must lie in"):
        jax.block_until_ready(net(p, jnp.array(2.0)))
