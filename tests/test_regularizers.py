import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import neuralde as nde
from neuralde.regularizers import JacobianFrobenius, KineticEnergy


def test_kinetic_energy_equals_quadrature_of_trajectory(getkey):
    field = nde.fields.MLP(3, key=getkey())
    y0 = jax.random.normal(getkey(), (3,))
    ts = jnp.linspace(0.0, 1.0, 2001)
    ys, ps = nde.solve(field, y0, steps=2000, ts=ts, regularizers=[KineticEnergy()])
    speed2 = jax.vmap(lambda t, y: jnp.sum(field(t, y, None) ** 2))(ts, ys)
    # Trapezoid on h = 5e-4: error ~ h^2 * |d^2/dt^2 speed^2| ~ 1e-7.
    cumulative = np.concatenate(
        [[0.0], np.cumsum(0.5 * (speed2[1:] + speed2[:-1]) * np.diff(ts))]
    )
    np.testing.assert_allclose(ps[:, 0], cumulative, rtol=1e-6, atol=1e-9)
    # and the state is the same as without the penalty
    np.testing.assert_allclose(ys[-1], nde.solve(field, y0, steps=2000), rtol=1e-14)


class Linear(eqx.Module):
    A: jax.Array

    def __call__(self, t, y, args):
        return self.A @ y


@pytest.mark.slow
def test_hutchinson_converges_to_exact_frobenius(getkey):
    A = jax.random.normal(getkey(), (4, 4))
    exact = 2.0 * jnp.sum(A**2)  # integral over [0, 2] of ||A||_F^2
    y0 = jax.random.normal(getkey(), (4,))
    keys = jax.random.split(getkey(), 64)

    def estimate(samples, key):
        reg = [JacobianFrobenius(samples=samples)]
        _, p = nde.solve(Linear(A), y0, t1=2.0, steps=4, regularizers=reg, key=key)
        return p[0]

    errs = []
    for samples in (1, 16, 256):
        est = jax.vmap(lambda k: estimate(samples, k))(keys)
        # unbiased: the mean over keys is near the exact value ...
        assert abs(jnp.mean(est) / exact - 1) < 3 * jnp.std(est) / exact / 8 + 1e-12
        errs.append(float(jnp.sqrt(jnp.mean((est - exact) ** 2)) / exact))
    # ... and the error falls like 1/sqrt(samples): 4x per 16x samples.
    assert errs[0] / errs[1] > 2.5 and errs[1] / errs[2] > 2.5, errs


@pytest.mark.slow
def test_hutchinson_nonlinear_field(getkey):
    field = nde.fields.Antisymmetric(3, key=getkey())
    y0 = jax.random.normal(getkey(), (3,))
    n = 400
    ts = jnp.linspace(0.0, 1.0, n + 1)
    ys = nde.solve(field, y0, steps=n, ts=ts)
    jac2 = jax.vmap(lambda t, y: jnp.sum(jax.jacfwd(field, 1)(t, y, None) ** 2))(ts, ys)
    exact = float(jnp.sum(0.5 * (jac2[1:] + jac2[:-1])) / n)
    _, p = nde.solve(
        field, y0, steps=n, regularizers=[JacobianFrobenius(4096)], key=getkey()
    )
    assert abs(float(p[0]) / exact - 1) < 0.05


def _penalty_fn(field, y0, **kw):
    params, static = eqx.partition(field, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def fn(x):
        f = eqx.combine(unravel(x), static)
        y1, p = nde.solve(f, y0, **kw)
        return jnp.sum(y1) + jnp.sum(p)

    return fn, flat


@pytest.mark.parametrize(
    "solver, gradient",
    [("rk4", "checkpoint"), ("reversible_heun", "reversible"), ("rk4", "adjoint")],
)
@pytest.mark.slow
def test_regularizers_differentiate_under_every_gradient_mode(getkey, solver, gradient):
    field = nde.fields.MLP(3, layers=2, key=getkey())
    y0 = jax.random.normal(getkey(), (3,))
    kw = dict(
        steps=64,
        solver=solver,
        regularizers=[KineticEnergy(), JacobianFrobenius(2)],
        key=getkey(),
    )
    f_mode, x = _penalty_fn(field, y0, gradient=gradient, **kw)
    f_ref, _ = _penalty_fn(field, y0, gradient="discretize", **kw)
    g, g_ref = jax.grad(f_mode)(x), jax.grad(f_ref)(x)
    rel = float(jnp.max(jnp.abs(g - g_ref)) / jnp.max(jnp.abs(g_ref)))
    # exact modes to round-off; the continuous adjoint to its discretisation error
    # (layers=2: a layer boundary inside the interval makes it O(h)).
    assert rel < (1e-3 if gradient == "adjoint" else 1e-10), rel


def test_bad_input(getkey):
    field = nde.fields.MLP(3, key=getkey())
    ham = nde.fields.Hamiltonian(3, 4, key=getkey())
    y0 = jnp.ones(3)
    with pytest.raises(ValueError, match="two-stream solver"):
        nde.solve(
            ham, (y0, y0), steps=2, solver="leapfrog", regularizers=[KineticEnergy()]
        )
    with pytest.raises(ValueError, match="pass `key=`"):
        nde.solve(field, y0, steps=2, regularizers=[JacobianFrobenius()])
    with pytest.raises(ValueError, match="stochastic"):
        nde.solve(field, y0, steps=2, key=getkey())
    with pytest.raises(TypeError, match="KineticEnergy"):
        nde.solve(field, y0, steps=2, regularizers=["kinetic"])
    with pytest.raises(ValueError, match="samples"):
        JacobianFrobenius(samples=0)
