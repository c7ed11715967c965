"""Neural SDEs through `neuralde.solve`: closed forms, convergence orders on one
Brownian path, every gradient mode on the same path, and bad input."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import optax
import pytest

import neuralde as nde


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def ou_drift(theta, mu):
    return lambda t, y, args: theta * (mu - y)


def constant(sigma):
    return lambda t, y, args: sigma * jnp.ones_like(y)


def test_ornstein_uhlenbeck_mean_and_variance():
    """dy = theta (mu - y) dt + sigma dW from y0: mean mu + (y0 - mu) e^{-theta t},
    variance sigma^2 / (2 theta) (1 - e^{-2 theta t})."""
    theta, mu, sigma, y0, t1 = 1.5, 0.7, 0.4, jnp.array([2.0]), 1.0
    paths = 4000

    def one(key):
        return nde.solve(
            ou_drift(theta, mu), y0, diffusion=constant(sigma), key=key,
            t1=t1, steps=200, solver="euler",
        )[0]  # fmt: skip

    ys = jax.jit(jax.vmap(one))(jr.split(jr.PRNGKey(0), paths))
    mean = mu + (2.0 - mu) * np.exp(-theta * t1)
    var = sigma**2 / (2 * theta) * (1 - np.exp(-2 * theta * t1))
    # Monte Carlo: the standard error of the mean is sqrt(var / paths) ~ 0.004, of
    # the variance var sqrt(2 / paths) ~ 0.0012; Euler's weak error is O(h) ~ 0.005.
    assert abs(float(ys.mean()) - mean) < 4 * np.sqrt(var / paths) + 0.01
    assert abs(float(ys.var()) - var) < 4 * var * np.sqrt(2 / paths) + 0.005


def gbm(mu, sigma):
    drift = lambda t, y, args: mu * y  # noqa: E731
    diffusion = lambda t, y, args: sigma * y  # noqa: E731
    return drift, diffusion


def strong_errors(solver, drift, diffusion, exact, steps, *, paths=200):
    """The mean over paths of |y_N - y(1)| on the same Brownian path as `exact`."""
    y0 = jnp.array([1.0])

    def error(key, n):
        y = nde.solve(drift, y0, diffusion=diffusion, key=key, steps=n, solver=solver)
        return jnp.abs(y[0] - exact(key))

    keys = jr.split(jr.PRNGKey(1), paths)
    return [
        float(jnp.mean(jax.jit(jax.vmap(lambda k: error(k, n)))(keys))) for n in steps
    ]


def brownian_end(key):
    """W(1) of the path that `solve` draws from `key` on [0, 1]."""
    tree = dfx.VirtualBrownianTree(
        0.0, 1.0, tol=2.0**-16, shape=jax.ShapeDtypeStruct((1,), jnp.float64), key=key
    )
    return tree.evaluate(0.0, 1.0)[0]


def slope(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize(
    "solver, calculus, order",
    [
        ("euler", "ito", 0.5),
        ("heun", "stratonovich", 1.0),
        pytest.param("reversible_heun", "stratonovich", 1.0, marks=pytest.mark.slow),
    ],
)
def test_geometric_brownian_motion_strong_order(solver, calculus, order):
    """dy = mu y dt + sigma y dW, pathwise on the same Brownian motion: Itô's
    solution y0 exp((mu - sigma^2/2) t + sigma W), Stratonovich's
    y0 exp(mu t + sigma W). Euler–Maruyama converges at strong order 1/2 with this
    multiplicative noise; Heun and reversible Heun at order 1 (commutative noise)."""
    mu, sigma = 0.5, 0.8
    drift, diffusion = gbm(mu, sigma)
    shift = mu - sigma**2 / 2 if calculus == "ito" else mu

    def exact(key):
        return jnp.exp(shift + sigma * brownian_end(key))

    steps = [16, 32, 64, 128, 256]
    errors = strong_errors(solver, drift, diffusion, exact, steps)
    measured = slope(steps, errors)
    assert order - 0.15 < measured < order + 0.25, (solver, measured, errors)


def successive_differences(solver, drift, diffusion, steps, *, paths=100):
    """mean |y_n - y_2n| over paths, for n in `steps`: it falls at the strong order
    of the solver, with no reference solution."""
    y0 = jnp.array([1.0])

    @jax.jit
    def ends(key):
        return [
            nde.solve(drift, y0, diffusion=diffusion, key=key, steps=n, solver=solver)[
                0
            ]
            for n in (*steps, 2 * steps[-1])
        ]

    ys = jnp.asarray(jax.vmap(ends)(jr.split(jr.PRNGKey(2), paths)))
    return [float(jnp.mean(jnp.abs(ys[i] - ys[i + 1]))) for i in range(len(steps))]


def test_additive_noise_euler_has_strong_order_one():
    """With additive noise Euler–Maruyama is of strong order 1: dy = -y dt + s dW,
    the differences of successive step counts on one path (the tree's increments
    are consistent across step counts)."""
    steps = [16, 32, 64, 128]
    errors = successive_differences("euler", ou_drift(1.0, 0.0), constant(0.5), steps)
    assert 0.85 < slope(steps, errors) < 1.25, errors


@pytest.mark.slow
def test_shark_on_additive_noise():
    """ShARK (Foster et al. 2023), for additive noise, is of higher order than
    Euler–Maruyama: its differences fall at least at order 1.5 here, and are
    smaller."""
    drift = lambda t, y, args: jnp.sin(y)  # noqa: E731
    steps = [4, 8, 16, 32]
    errors = successive_differences("shark", drift, constant(0.5), steps)
    assert slope(steps, errors) > 1.4, errors
    euler = successive_differences("euler", drift, constant(0.5), steps)
    assert errors[-1] < euler[-1] / 10, (errors, euler)


def test_one_key_one_path():
    """The same key gives the same path at any step count: fine solves agree."""
    drift, diffusion = gbm(0.1, 0.3)
    y0, key = jnp.array([1.0]), jr.PRNGKey(3)
    ys = [
        nde.solve(drift, y0, diffusion=diffusion, key=key, steps=n, solver="heun")
        for n in (2048, 4096)
    ]
    np.testing.assert_allclose(ys[0], ys[1], rtol=1e-5)
    other = nde.solve(
        drift, y0, diffusion=diffusion, key=jr.PRNGKey(4), steps=4096, solver="heun"
    )
    assert abs(float(other[0] - ys[1][0])) > 1e-3


def test_general_noise_is_a_lineax_operator():
    """Two states driven by one Brownian motion: G = [[s], [s]] gives equal
    increments to both components."""
    sigma = 0.3

    def diffusion(t, y, args):
        return lx.MatrixLinearOperator(sigma * jnp.ones((2, 1)))

    y = nde.solve(
        lambda t, y, args: jnp.zeros_like(y), jnp.zeros(2), diffusion=diffusion,
        key=jr.PRNGKey(0), steps=10, solver="euler",
    )  # fmt: skip
    assert y[0] == y[1] and abs(float(y[0])) > 0


def field_and_state(key):
    fkey, ykey = jr.split(key)
    field = nde.fields.MLP(3, layers=2, dtype=jnp.float64, key=fkey)
    field = eqx.tree_at(
        lambda f: f.bias, field, 0.1 * jr.normal(ykey, field.bias.shape)
    )
    y0 = jr.normal(ykey, (4, 3))
    return field, y0


class Diffusion(eqx.Module):
    """A learnable multiplicative diffusion, 0.2 tanh(a y + b)."""

    a: jax.Array
    b: jax.Array

    def __call__(self, t, y, args):
        return 0.2 * jnp.tanh(self.a * y + self.b)


def test_every_gradient_mode_agrees_on_one_path():
    """checkpoint == reversible == discretize to 1e-10 in float64 on the same key
    (drift and diffusion parameters), and discretize matches finite differences."""
    field, y0 = field_and_state(jr.PRNGKey(0))
    diffusion = Diffusion(jnp.array([0.5, -1.0, 2.0]), jnp.array([0.1, 0.0, -0.2]))
    key = jr.PRNGKey(5)

    def loss(params, gradient):
        field, diffusion = params
        y1 = nde.solve(
            field, y0, diffusion=diffusion, key=key, steps=40,
            solver="reversible_heun", gradient=gradient,
        )  # fmt: skip
        return jnp.sum(y1**2)

    params = (field, diffusion)
    grads = {
        mode: eqx.filter_jit(eqx.filter_grad(loss))(params, mode)
        for mode in ("discretize", "checkpoint", "reversible")
    }
    flat = {
        m: jax.flatten_util.ravel_pytree(eqx.filter(g, eqx.is_inexact_array))[0]
        for m, g in grads.items()
    }
    for mode in ("checkpoint", "reversible"):
        np.testing.assert_allclose(
            flat[mode], flat["discretize"], rtol=1e-10, atol=1e-12
        )
    # Finite differences along a random direction of the diffusion's parameters.
    direction = jr.normal(jr.PRNGKey(6), (3,))
    eps = 1e-6

    def shifted(s):
        moved = eqx.tree_at(lambda d: d.a, diffusion, diffusion.a + s * direction)
        return loss((field, moved), "discretize")

    fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
    np.testing.assert_allclose(
        jnp.dot(grads["discretize"][1].a, direction), fd, rtol=1e-6
    )


def test_adjoint_is_diffrax_backsolve_and_converges():
    """`gradient="adjoint"` on an SDE is diffrax's `BacksolveAdjoint` (Stratonovich)
    on the same steps and path: close to the discrete gradient, closer with more
    steps."""
    field, y0 = field_and_state(jr.PRNGKey(0))
    diffusion = Diffusion(jnp.array([0.5, -1.0, 2.0]), jnp.array([0.1, 0.0, -0.2]))
    key = jr.PRNGKey(7)

    def grad(gradient, steps):
        def loss(field):
            y1 = nde.solve(
                field, y0, diffusion=diffusion, key=key, steps=steps, solver="heun",
                gradient=gradient,
            )  # fmt: skip
            return jnp.sum(y1**2)

        g = eqx.filter_jit(eqx.filter_grad(loss))(field)
        return jax.flatten_util.ravel_pytree(eqx.filter(g, eqx.is_inexact_array))[0]

    errors = []
    for steps in (50, 200):
        do, od = grad("discretize", steps), grad("adjoint", steps)
        errors.append(float(jnp.linalg.norm(od - do) / jnp.linalg.norm(do)))
    assert errors[0] < 0.05 and errors[1] < errors[0] / 2, errors
    with pytest.raises(ValueError, match="Stratonovich"):
        nde.solve(
            field,
            y0,
            diffusion=diffusion,
            key=key,
            steps=10,
            solver="euler",
            gradient="adjoint",
        )


def test_a_batch_gets_independent_noise():
    field, y0 = field_and_state(jr.PRNGKey(0))
    diffusion = Diffusion(jnp.array([0.5, -1.0, 2.0]), jnp.array([0.1, 0.0, -0.2]))
    y1 = nde.solve(
        field, y0, diffusion=diffusion, key=jr.PRNGKey(1), steps=20, solver="heun"
    )
    same = nde.solve(
        field,
        jnp.stack([y0[0]] * 4),
        diffusion=diffusion,
        key=jr.PRNGKey(1),
        steps=20,
        solver="heun",
    )
    assert y1.shape == (4, 3)
    # Identical examples, independent noise: the batch's examples differ.
    assert float(jnp.max(jnp.abs(same[0] - same[1]))) > 1e-3


def test_bad_input():
    drift, diffusion = gbm(0.1, 0.3)
    y0 = jnp.array([1.0])
    key = jr.PRNGKey(0)
    with pytest.raises(ValueError, match="`diffusion` needs a PRNG `key=`"):
        nde.solve(drift, y0, diffusion=diffusion, steps=4, solver="euler")
    with pytest.raises(ValueError, match="`key` is used by"):
        nde.solve(drift, y0, key=key, steps=4)
    with pytest.raises(ValueError, match="Diagonal noise is shaped like the state"):
        nde.solve(
            drift,
            y0,
            diffusion=lambda t, y, a: jnp.ones(2),
            key=key,
            steps=4,
            solver="euler",
        )
    with pytest.raises(ValueError, match="is a solver of ODEs"):
        nde.solve(drift, y0, diffusion=diffusion, key=key, steps=4, solver="rk4")
    with pytest.raises(ValueError, match='gradient="reversible"'):
        nde.solve(
            drift,
            y0,
            diffusion=diffusion,
            key=key,
            steps=4,
            solver="heun",
            gradient="reversible",
        )
    with pytest.raises(ValueError, match="converges to the Itô solution"):
        nde.solve(
            drift,
            y0,
            diffusion=diffusion,
            key=key,
            steps=4,
            solver="euler",
            calculus="stratonovich",
        )
    with pytest.raises(ValueError, match="fixed steps"):
        nde.solve(drift, y0, diffusion=diffusion, key=key, solver="heun")
    with pytest.raises(ValueError, match="`calculus` is for"):
        nde.solve(drift, y0, steps=4, calculus="ito")
    with pytest.raises(TypeError, match="`diffusion` must be a callable"):
        nde.solve(drift, y0, diffusion=0.3, key=key, steps=4, solver="euler")


def test_an_sde_block_draws_its_key_and_trains_with_fit():
    field = nde.fields.MLP(2, layers=2, dtype=jnp.float64, key=jr.PRNGKey(0))
    block = nde.nn.ODEBlock(
        field, diffusion=constant(0.1), steps=8, solver="reversible_heun",
        gradient="reversible",
    )  # fmt: skip
    y0 = jnp.array([[0.5, -0.5], [1.0, 0.0]])
    a, b = block(y0, key=jr.PRNGKey(1)), block(y0, key=jr.PRNGKey(1))
    assert jnp.array_equal(a, b)
    assert not jnp.allclose(a, block(y0, key=jr.PRNGKey(2)))
    with pytest.raises(ValueError, match="pass `key=`"):
        block(y0)
    # Without diffusion the key is ignored, as for any layer.
    plain = nde.nn.ODEBlock(field, steps=8)
    assert jnp.array_equal(plain(y0, key=jr.PRNGKey(1)), plain(y0))

    x = jr.normal(jr.PRNGKey(3), (64, 2))
    target = jnp.tanh(x[:, ::-1])

    def loss(model, x, y, *, key):
        return jnp.mean((model(x, key=key) - y) ** 2)

    trained, history = nde.train.fit(
        block, loss, (x, target), optax.adam(3e-2), key=jr.PRNGKey(4), steps=60,
        batch_size=16, eval_every=20, progress=False,
    )  # fmt: skip
    assert history["train_loss"][-1] < 0.7 * history["train_loss"][0]
    assert not jnp.allclose(trained.field.operator.weight, field.operator.weight)


def test_ensemble_is_the_mean_over_paths():
    field = nde.fields.MLP(2, dtype=jnp.float64, key=jr.PRNGKey(0))
    block = nde.nn.ODEBlock(field, diffusion=constant(0.3), steps=4, solver="euler")
    y0 = jnp.array([0.5, -0.5])
    key = jr.PRNGKey(1)
    mean = nde.nn.Ensemble(block, samples=8)(y0, key=key)
    by_hand = jnp.mean(jnp.stack([block(y0, key=k) for k in jr.split(key, 8)]), 0)
    np.testing.assert_allclose(mean, by_hand, rtol=1e-12)
    # The ensemble's spread falls as 1/sqrt(samples) around the expectation.
    many = nde.nn.Ensemble(block, samples=2000)(y0, key=jr.PRNGKey(2))
    few = [nde.nn.Ensemble(block, samples=20)(y0, key=k) for k in jr.split(key, 30)]
    spread = float(jnp.std(jnp.stack(few)[:, 0]))
    assert abs(float(mean[0] - many[0])) < 5 * spread * np.sqrt(20 / 8)
    with pytest.raises(ValueError, match="samples"):
        nde.nn.Ensemble(block, samples=0)


@pytest.mark.slow
def test_additive_noise_keeps_the_hamiltonian_flow_volume_preserving():
    """The Jacobian of the stochastic flow map of a divergence-free drift has
    determinant 1 with additive noise (to the solver's accuracy), and not with
    multiplicative noise."""
    field = nde.fields.Hamiltonian(2, 3, dtype=jnp.float64, key=jr.PRNGKey(0))
    y0 = (jnp.array([0.3, -0.2]), jnp.array([0.1, 0.4]))
    key = jr.PRNGKey(1)

    def det(diffusion):
        def flow(y):
            return nde.solve(
                field, y, diffusion=diffusion, key=key, steps=400, solver="heun"
            )

        jac = jax.jacfwd(
            lambda v: jax.flatten_util.ravel_pytree(flow((v[:2], v[2:])))[0]
        )
        return float(jnp.linalg.det(jac(jnp.concatenate(y0))))

    additive = lambda t, y, args: (0.3 * jnp.ones(2), 0.3 * jnp.ones(2))  # noqa: E731
    multiplicative = lambda t, y, args: (0.5 * y[0], 0.5 * y[1])  # noqa: E731
    assert abs(det(additive) - 1) < 1e-4
    assert abs(det(multiplicative) - 1) > 1e-2


@pytest.mark.slow
def test_stability_diagnostics_of_an_sde():
    """`perturbation_growth` over Brownian paths: both solutions of a ratio share
    the path. Without noise it is the ODE's; with additive noise the difference of
    two solutions obeys the parabolic difference equation, so perturbations still
    never grow. `energy_drift` of a Hamiltonian drift with noise: one drift per
    path, growing with the noise."""
    field = nde.fields.Parabolic(3, 4, dtype=jnp.float64, key=jr.PRNGKey(0))
    y0 = jnp.array([0.3, -0.2, 0.5])
    kwargs = dict(eps=1e-6, samples=4, steps=20, solver="heun", key=jr.PRNGKey(1))
    ode = nde.stability.perturbation_growth(field, y0, **kwargs)

    def sde(diffusion):
        return nde.stability.perturbation_growth(
            field, y0, diffusion=diffusion, paths=3, **kwargs
        )

    # A difference quotient with eps = 1e-6 in float64: round-off ~ 1e-16 / 1e-6.
    np.testing.assert_allclose(sde(constant(0.0)).random, ode.random, rtol=1e-9)
    additive = sde(constant(0.3))
    assert additive.random.shape == (4,)
    assert bool(jnp.all(additive.random <= 1 + 1e-6)) and additive.adversarial <= 1
    assert not jnp.allclose(additive.random, ode.random, rtol=1e-3)

    ham = nde.fields.Hamiltonian(2, 3, dtype=jnp.float64, key=jr.PRNGKey(2))
    state = (jnp.array([0.3, -0.2]), jnp.array([0.1, 0.4]))

    def drifts(sigma):
        noise = lambda t, y, args: (sigma * jnp.ones(2), sigma * jnp.ones(2))  # noqa: E731
        return nde.stability.energy_drift(
            ham, state, steps=40, solver="reversible_heun", diffusion=noise,
            paths=16, key=jr.PRNGKey(3),
        )  # fmt: skip

    small, large = drifts(0.05), drifts(0.5)
    assert small.shape == (16,) and float(jnp.median(small)) < float(jnp.median(large))
    with pytest.raises(ValueError, match="needs a PRNG `key=`"):
        nde.stability.energy_drift(
            ham, state, steps=4, solver="heun", diffusion=constant(0.1)
        )


@pytest.mark.parametrize(
    "gradient",
    ["discretize", pytest.param("reversible", marks=pytest.mark.slow), "adjoint"],
)
def test_a_state_that_blows_up_raises_with_its_time(gradient):
    """dy = y^2 dt + 0.1 dW from y0 = 2 blows up near t = 0.5: the error names the
    time, inside jit and under grad, for the scan's modes and diffrax's backsolve."""

    class Blowup(eqx.Module):
        scale: jax.Array

        def __call__(self, t, y, args):
            return self.scale * y**2

    def loss(scale):
        y = nde.solve(
            Blowup(scale), jnp.array([2.0]),
            diffusion=constant(0.1), key=jr.PRNGKey(0), steps=200,
            solver="reversible_heun", gradient=gradient,
        )  # fmt: skip
        return jnp.sum(y)

    with pytest.raises(Exception, match=r"non-finite.*t = 0\.5"):
        jax.jit(jax.grad(loss))(1.0)
