import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.signal

import neuralde as nde


# Compile time dominates these tests, and every new shape of a random draw compiles
# anew: every `Conv` here maps 2 channels to 3 with a 3x3 kernel and is drawn as a
# stack of 2 layers, the blocks have 2 channels, test data come from NumPy, and each
# computation is one jitted function.


def _stacked(key, shape=(4, 5), **kwargs):
    make = lambda k: nde.operators.Conv(2, 3, 3, shape=shape, key=k, **kwargs)  # noqa: E731
    return nde.operators.stack(make, layers=2, key=key)


def _conv(key, **kwargs):
    """One `Conv(2, 3, 3, shape=(4, 5))`, as drawn by the constructor."""
    return _stacked(key, **kwargs).at_layer(0)


def _with_bias(field, rng):
    return eqx.tree_at(
        lambda f: f.bias, field, jnp.asarray(rng.normal(size=field.bias.shape))
    )


def _roll(x, shift=(1, -2)):
    return jnp.roll(x, shift, axis=(-2, -1))


def test_maxpool_3x3_stride1_fixture():
    # 3x3 max-pool with stride 1 on a 5x5 grid: a fixed example with known output.
    x = np.array(
        [
            [3, 3, 2, 1, 0],
            [0, 0, 1, 3, 1],
            [3, 1, 2, 2, 3],
            [2, 0, 0, 2, 2],
            [2, 0, 0, 0, 1],
        ],
        np.float64,
    )
    expected = np.array([[3, 3, 3], [3, 3, 3], [3, 2, 3]], np.float64)
    out = nde.nn.Pool2d(3, stride=1)(x[None])
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0], expected)  # a max is exact
    # Average pooling, default stride = window: the means of the 2x2 blocks.
    avg = nde.nn.Pool2d(2, mode="avg")(x[None])[0]
    blocks = x[:4, :4].reshape(2, 2, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(avg, blocks, rtol=1e-15)


def _scipy_conv(w, x, boundary):
    """sum_c correlate2d(x_c, w_oc), 'same' output: the reference for `Conv`."""
    return np.stack(
        [
            sum(
                scipy.signal.correlate2d(x[c], w[o, c], mode="same", boundary=boundary)
                for c in range(x.shape[0])
            )
            for o in range(w.shape[0])
        ]
    )


def test_conv_operator_matches_scipy(getkey):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5))
    for mode, boundary in [("CIRCULAR", "wrap"), ("ZEROS", "fill")]:
        K = _conv(getkey(), padding_mode=mode)
        assert K.weight.shape == (3, 2, 3, 3)
        expected = _scipy_conv(np.asarray(K.weight), x, boundary)
        # Sums of 18 products of O(1) terms: round-off ~1e-15.
        np.testing.assert_allclose(K(x), expected, rtol=0, atol=1e-13)
    # An even kernel puts its extra tap after the centre (lax's "SAME"): along the
    # height, pad 0 rows before and 1 after; along the width, 1 on both sides.
    w = rng.normal(size=(3, 2, 2, 3))
    K = eqx.tree_at(lambda K: K.weight, _conv(getkey()), w)
    padded = np.pad(x, ((0, 0), (0, 1), (1, 1)), mode="wrap")
    expected = np.stack(
        [
            sum(scipy.signal.correlate2d(padded[c], w[o, c], "valid") for c in (0, 1))
            for o in range(3)
        ]
    )
    np.testing.assert_allclose(K(x), expected, rtol=0, atol=1e-13)


@eqx.filter_jit
def _apply_and_transpose(K, x, y):
    return K(x), K.T(y)


def test_conv_transpose_is_exact_adjoint(getkey):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 5))
    y = rng.normal(size=(3, 4, 5))
    for mode in ("CIRCULAR", "ZEROS"):
        Kx, KTy = _apply_and_transpose(_conv(getkey(), padding_mode=mode), x, y)
        assert KTy.shape == x.shape
        # <Kx, y> = <x, K^T y>: each side sums 60 products; float64 round-off
        # relative to |Kx| |y| is ~1e-15, well below 1e-13.
        scale = np.linalg.norm(Kx) * np.linalg.norm(y)
        assert abs(np.vdot(Kx, y) - np.vdot(x, KTy)) < 1e-13 * scale
    # With the periodic boundary, K^T y is the correlation of y with the flipped
    # kernels of the same weights (the transposed convolution).
    K = _conv(getkey())
    _, KTy = _apply_and_transpose(K, x, y)
    flipped = np.swapaxes(np.asarray(K.weight)[:, :, ::-1, ::-1], 0, 1)
    np.testing.assert_allclose(KTy, _scipy_conv(flipped, y, "wrap"), atol=1e-13)


@eqx.filter_jit
def _shift_commutators(layers, inputs):
    """max |layer(roll(x)) - roll(layer(x))| for each layer and its input."""
    return [
        jnp.max(jnp.abs(layer(_roll(x)) - _roll(layer(x))))
        for layer, x in zip(layers, inputs)
    ]


def test_translation_equivariance(getkey):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 4, 5)), rng.normal(size=(3, 4, 5))
    K = _conv(getkey())
    # A field on Conv, with one bias per channel.
    field = nde.fields.Parabolic(operator=_stacked(getkey()), layers=2)
    field = _with_bias(field, rng)
    assert field.bias.shape == (2, 3, 1, 1)
    layers = [
        K,
        K.T,
        nde.nn.ConvBlock(2, 2, key=getkey()),
        nde.nn.ResidualBlock(2, key=getkey()),
        eqx.Partial(field, 0.7, args=None),
        _conv(getkey(), padding_mode="ZEROS"),
    ]
    errors = _shift_commutators(layers, [x, y, x, x, x, x])
    # Circular boundary: every layer commutes with a cyclic shift. The same products
    # are summed (or averaged, in GroupNorm) in another order: round-off ~1e-15.
    assert max(errors[:-1]) < 1e-13
    # Zero padding breaks the symmetry at the borders: the check above can fail.
    assert errors[-1] > 1e-2


@eqx.filter_jit
def _jacobian(field, y):
    return jax.jacfwd(field, argnums=1)(0.7, y, None).reshape(y.size, y.size)


def test_parabolic_conv_jacobian_is_negative_semidefinite(getkey):
    rng = np.random.default_rng(3)
    field = nde.fields.Parabolic(operator=_stacked(getkey()), layers=2)
    field = _with_bias(field, rng)
    # J = -K^T diag(sigma') K, with K the 60 x 40 matrix of the convolution.
    J = np.asarray(_jacobian(field, rng.normal(size=(2, 4, 5))))
    np.testing.assert_allclose(J, J.T, rtol=0, atol=1e-14)
    eig = np.linalg.eigvalsh(J)
    assert eig.max() < 1e-13  # negative semi-definite up to round-off of O(1) entries
    assert eig.min() < -1e-2  # and not trivially zero


def _hamiltonian(key, rng):
    field = nde.fields.Hamiltonian(operator=_stacked(key), layers=2)
    return _with_bias(field, rng)


@eqx.filter_jit
def _flow_jacobian(field, u):
    def flow(u):
        y0 = tuple(u.reshape(2, 2, 4, 5))
        y, z = nde.solve(field, y0, steps=4, solver="leapfrog")
        return jnp.concatenate([y.ravel(), z.ravel()])

    return jax.jacrev(flow)(u)


def test_hamiltonian_conv_preserves_volume(getkey):
    rng = np.random.default_rng(4)
    field = _hamiltonian(getkey(), rng)
    J = np.asarray(_flow_jacobian(field, rng.normal(size=80)))
    # Each leapfrog step composes shears (half a step of z += g(y), y += f(z), half
    # of z += g(y)) whose Jacobians have determinant exactly 1; the 80 x 80 product
    # keeps it up to round-off.
    assert abs(np.linalg.det(J) - 1) < 1e-12
    assert np.max(np.abs(J - np.eye(80))) > 1e-2  # and the flow is not trivial


@eqx.filter_jit
def _gradients(field, y0):
    def loss(field, gradient):
        y, z = nde.solve(
            field, y0, steps=4, solver="symplectic_euler", gradient=gradient
        )
        return jnp.sum(y**2) + jnp.sum(jnp.sin(z))

    grad = jax.grad(loss)
    return grad(field, "discretize"), grad(field, "reversible")


def test_hamiltonian_conv_reversible_gradient(getkey):
    rng = np.random.default_rng(5)
    field = _hamiltonian(getkey(), rng)
    g_disc, g_rev = _gradients(field, tuple(rng.normal(size=(2, 2, 4, 5))))
    for a, b in zip(jax.tree.leaves(g_disc), jax.tree.leaves(g_rev)):
        # The same discrete gradient; the reversible pass rebuilds the states by
        # inverting 4 steps, a few ulps each.
        np.testing.assert_allclose(b, a, rtol=1e-11, atol=1e-12)
    assert np.max(np.abs(g_disc.operator.weight)) > 1e-3  # a non-trivial gradient


def _stripes(rng, n):
    """Images of 3 classes: horizontal stripes, vertical stripes, none; plus noise."""
    labels = np.arange(n) % 3
    stripes = np.tile([1.0, -1.0], 4)
    patterns = np.stack(
        [
            np.repeat(stripes[:, None], 8, 1),
            np.repeat(stripes[None], 8, 0),
            np.zeros((8, 8)),
        ]
    )
    images = patterns[labels] + 0.5 * rng.normal(size=(n, 8, 8))
    return images[:, None], labels


def test_cnn_training_reduces_loss(getkey):
    images, labels = _stripes(np.random.default_rng(6), 6)
    model = nde.nn.CNN(1, 3, channels=2, depth=1, key=getkey())
    optim = optax.adam(3e-2)
    opt_state = optim.init(eqx.filter(model, eqx.is_inexact_array))

    def loss_fn(model):
        logits = jax.vmap(model)(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)  # no recompilation after the first
    def step(model, opt_state):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, opt_state = optim.update(grads, opt_state)
        return eqx.apply_updates(model, updates), opt_state, loss

    losses = []
    for _ in range(20):
        model, opt_state, loss = step(model, opt_state)
        losses.append(float(loss))
    # The stripes' orientation survives the global average pool only through the
    # convolutions; 20 Adam steps cut the loss from about log 3 by a third.
    assert losses[0] > 0.8
    assert losses[-1] < 0.7 * losses[0]


class _ODEBody(eqx.Module):
    """A continuous-time middle block, as a user would write it."""

    field: nde.fields.Parabolic

    def __call__(self, x, *, key=None):
        return nde.solve(self.field, x, steps=2, solver="euler")


@eqx.filter_jit
def _logits_and_grad(model, x, shifted):
    logits, grads = eqx.filter_value_and_grad(lambda m: jnp.sum(m(x) ** 2))(model)
    return jax.vmap(model)(jnp.stack([x, shifted])), grads


def test_cnn_with_continuous_body(getkey):
    # After the stem's 2x2 pool, the body sees (2, 4, 4) images.
    field = nde.fields.Parabolic(operator=_stacked(getkey(), (4, 4)), layers=2)
    model = nde.nn.CNN(1, 3, channels=2, body=_ODEBody(field), key=getkey())
    x = np.random.default_rng(7).normal(size=(1, 8, 8))
    # Circular convolutions, a parabolic field on Conv and the global average pool:
    # a shift by multiples of the pool's stride leaves the logits unchanged.
    logits, grads = _logits_and_grad(model, x, _roll(x, (2, -4)))
    assert logits.shape == (2, 3)
    np.testing.assert_allclose(logits[1], logits[0], rtol=0, atol=1e-12)
    # The body's kernels are trained with the rest of the model.
    assert np.max(np.abs(grads.body.field.operator.weight)) > 1e-6


def test_bad_inputs(getkey):
    # Checks run at trace time, so abstract evaluation suffices: no compilation.
    shape = eqx.filter_eval_shape
    K = shape(_conv, getkey())
    with pytest.raises(ValueError, match="3 channels.*takes 2"):
        shape(K, jnp.ones((3, 4, 5)))
    with pytest.raises(ValueError, match=r"built for \(4, 5\)"):
        shape(K, jnp.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="vmap"):
        shape(K, jnp.ones((7, 2, 4, 5)))
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) is larger than the image"):
        shape(_conv, getkey(), shape=(2, 5))
    with pytest.raises(ValueError, match="padding_mode"):
        shape(_conv, getkey(), padding_mode="REFLECT")
    with pytest.raises(ValueError, match="pair"):
        shape(nde.operators.Conv, 2, 3, (3, 3, 3), shape=(4, 5), key=getkey())
    with pytest.raises(ValueError, match="unstacked.*operators.stack"):
        nde.fields.Parabolic(operator=K, layers=3)
    with pytest.raises(ValueError, match="square"):
        shape(lambda k: nde.fields.MLP(operator=_stacked(k), layers=2), getkey())
    field = shape(
        lambda k: nde.fields.Parabolic(operator=_stacked(k), layers=2), getkey()
    )
    with pytest.raises(ValueError, match=r"shape \(2, 4, 5\)"):
        shape(field, 0.0, jnp.ones((3, 4, 5)), None)

    block = shape(nde.nn.ConvBlock, 2, 2, key=getkey())
    with pytest.raises(ValueError, match=r"in_channels=2, but got shape \(3, 6, 6\)"):
        shape(block, jnp.ones((3, 6, 6)))
    with pytest.raises(ValueError, match="vmap"):
        shape(block, jnp.ones((5, 2, 6, 6)))
    valid = shape(lambda k: nde.nn.ConvBlock(2, 2, 5, padding="VALID", key=k), getkey())
    with pytest.raises(ValueError, match=r"window \(5, 5\) is larger than the image"):
        shape(valid, jnp.ones((2, 3, 6)))
    with pytest.raises(ValueError, match="in_channels=2"):
        shape(shape(nde.nn.ResidualBlock, 2, key=getkey()), jnp.ones((4, 6, 6)))
    with pytest.raises(ValueError, match="must divide"):
        shape(lambda k: nde.nn.ResidualBlock(6, groups=4, key=k), getkey())
    with pytest.raises(ValueError, match=r"window \(3, 3\) is larger"):
        shape(nde.nn.Pool2d(3), jnp.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="mode"):
        nde.nn.Pool2d(2, mode="min")
    with pytest.raises(ValueError, match="one image"):
        shape(nde.nn.GlobalAvgPool2d(), jnp.ones((4, 4)))

    def cnn(key, **kwargs):
        return shape(lambda k: nde.nn.CNN(1, 3, channels=2, key=k, **kwargs), key)

    with pytest.raises(ValueError, match="either `depth`"):
        cnn(getkey(), depth=2, body=lambda h: h)
    with pytest.raises(ValueError, match="non-negative"):
        cnn(getkey(), depth=-1)
    wrong = cnn(getkey(), body=lambda h: jnp.concatenate([h, h]))
    with pytest.raises(ValueError, match=r"body must map.*to \(4, 4, 4\)"):
        shape(wrong, jnp.ones((1, 8, 8)))
    with pytest.raises(ValueError, match="pool"):
        cnn(getkey(), pool=0)
    with pytest.raises(ValueError, match="in_channels=1"):
        shape(cnn(getkey()), jnp.ones((3, 8, 8)))
