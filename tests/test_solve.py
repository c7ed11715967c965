import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import jax.test_util
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import neuralde as nde


FIXED = ["euler", "midpoint", "heun", "rk4"]


class Linear(eqx.Module):
    A: jax.Array

    def __call__(self, t, y, args):
        return self.A @ y


def _random_stable_matrix(key, n):
    A = jax.random.normal(key, (n, n)) / jnp.sqrt(n)
    return A - A.T - 0.3 * jnp.eye(n)


@pytest.mark.parametrize("solver", ["rk4", "tsit5", "dopri5"])
def test_linear_field_matches_expm(getkey, solver):
    A = _random_stable_matrix(getkey(), 5)
    y0 = jax.random.normal(getkey(), (5,))
    exact = jsl.expm(2.0 * A) @ y0
    if solver == "rk4":
        y1 = nde.solve(Linear(A), y0, t1=2.0, steps=200, solver=solver)
        tol = 1e-9  # RK4 error ~ (h = 0.01)^4 times the solution scale
    else:
        y1 = nde.solve(Linear(A), y0, t1=2.0, solver=solver, rtol=1e-10, atol=1e-12)
        tol = 1e-8
    assert jnp.allclose(y1, exact, rtol=0, atol=tol)


@pytest.mark.parametrize("solver, order", list(zip(FIXED, [1, 2, 2, 4])))
def test_convergence_order(getkey, solver, order):
    f = nde.fields.MLP(4, key=getkey())
    y0 = jax.random.normal(getkey(), (4,))
    ref = nde.solve(f, y0, solver="tsit5", rtol=1e-13, atol=1e-13, max_steps=100_000)
    ns = np.array([16, 32, 64])
    errs = [
        float(jnp.linalg.norm(nde.solve(f, y0, steps=int(n), solver=solver) - ref))
        for n in ns
    ]
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, (solver, slope, errs)


def test_time_dependent_linear_field_order(getkey):
    # y' = t A y has the closed form y(t) = expm(t^2/2 A) y0: checks that each solver
    # evaluates the field at the right stage times.
    A = _random_stable_matrix(getkey(), 3)
    y0 = jax.random.normal(getkey(), (3,))
    f = lambda t, y, args: t * (A @ y)  # noqa: E731
    exact = jsl.expm(0.5 * A) @ y0
    for solver, order in zip(FIXED, [1, 2, 2, 4]):
        errs = [
            float(jnp.linalg.norm(nde.solve(f, y0, steps=n, solver=solver) - exact))
            for n in (16, 32, 64)
        ]
        slope = -np.polyfit(np.log([16, 32, 64]), np.log(errs), 1)[0]
        assert abs(slope - order) < 0.3, (solver, slope)


def _params_fn(field, y0, **kw):
    """A scalar function of a flat vector of (field parameters, y0)."""
    params, static = eqx.partition((field, y0), eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def fn(x):
        f, y = eqx.combine(unravel(x), static)
        out = nde.solve(f, y, **kw)
        return sum(jnp.sum(jnp.sin(o)) for o in jax.tree.leaves(out))

    return fn, flat


CASES = [
    ("mlp", "rk4"),
    ("mlp", "heun"),
    ("hamiltonian", "symplectic_euler"),
    ("hyperbolic", "leapfrog"),
    ("antisymmetric", "reversible_heun"),
]


def _case(name, key):
    k1, k2 = jax.random.split(key)
    if name == "mlp":
        return nde.fields.MLP(3, layers=2, key=k1), jax.random.normal(k2, (3,))
    if name == "antisymmetric":
        return nde.fields.Antisymmetric(3, layers=2, key=k1), jax.random.normal(
            k2, (3,)
        )
    cls = nde.fields.Hamiltonian if name == "hamiltonian" else nde.fields.Hyperbolic
    y0 = tuple(jax.random.normal(k2, (2, 3)))
    return cls(3, 4, layers=2, key=k1), y0


# "checkpoint" is also checked against "discretize" to round-off, on every case below.
@pytest.mark.parametrize(
    "name, solver, gradient",
    [(n, s, "discretize") for n, s in CASES] + [("mlp", "rk4", "checkpoint")],
)
def test_gradients_match_finite_differences(getkey, name, solver, gradient):
    field, y0 = _case(name, getkey())
    fn, x = _params_fn(field, y0, steps=10, solver=solver, gradient=gradient)
    # Central differences in float64: truncation ~eps^(2/3) ~ 1e-10 relative.
    jax.test_util.check_grads(
        fn, (x,), order=1, modes=["rev"], eps=1e-5, atol=1e-7, rtol=1e-7
    )


@pytest.mark.parametrize(
    "name, solver", [("mlp", "rk4"), ("antisymmetric", "midpoint")]
)
@pytest.mark.slow
def test_adjoint_gradient_matches_finite_differences(getkey, name, solver):
    field, y0 = _case(name, getkey())
    # The continuous adjoint differs from the gradient of the discrete forward map by
    # the discretisation error of the adjoint solve, O(h^p): 200 RK4 steps make it
    # ~1e-10, well below the tolerance.
    steps = 200 if solver == "rk4" else 2000
    fn, x = _params_fn(field, y0, steps=steps, solver=solver, gradient="adjoint")
    jax.test_util.check_grads(
        fn, (x,), order=1, modes=["rev"], eps=1e-5, atol=1e-6, rtol=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("name, solver", CASES)
def test_checkpoint_equals_discretize(getkey, name, solver):
    field, y0 = _case(name, getkey())
    grads = {}
    # The default (ceil(sqrt(20)) = 5 checkpoints) and, once, a sparser choice.
    sparse = [("checkpoint", 2)] if solver == "rk4" else []
    for gradient, checkpoints in [("discretize", None), ("checkpoint", None)] + sparse:
        fn, x = _params_fn(
            field,
            y0,
            steps=20,
            solver=solver,
            gradient=nde.gradients.Checkpoint(checkpoints=checkpoints)
            if gradient == "checkpoint"
            else gradient,
        )
        grads[gradient, checkpoints] = (fn(x), jax.grad(fn)(x))
    ref_v, ref_g = grads["discretize", None]
    for v, g in grads.values():
        assert jnp.allclose(v, ref_v, rtol=1e-13, atol=0)
        assert jnp.allclose(g, ref_g, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_adjoint_converges_to_discretize(getkey):
    # layers=1: the field is smooth in t, so the adjoint approaches the discrete
    # gradient at the solver's order.
    field = nde.fields.MLP(3, key=getkey())
    y0 = jax.random.normal(getkey(), (3,))
    errs = []
    for n in (4, 8, 16):
        ga = jax.grad(
            _params_fn(field, y0, steps=n, solver="rk4", gradient="adjoint")[0]
        )
        fd, x = _params_fn(field, y0, steps=n, solver="rk4", gradient="discretize")
        errs.append(float(jnp.linalg.norm(ga(x) - jax.grad(fd)(x))))
    assert errs[0] > errs[1] > errs[2]
    slope = np.log2(errs[0] / errs[2]) / 2
    assert slope > 3.5, errs  # fourth order


def test_resnet_equals_euler(getkey):
    f = nde.fields.Antisymmetric(4, layers=6, t1=2.0, key=getkey())
    y0 = jax.random.normal(getkey(), (4,))
    a = nde.resnet(f, y0)
    b = nde.solve(f, y0, steps=6, solver="euler")
    assert jnp.allclose(a, b, rtol=1e-14, atol=1e-15)
    ga = jax.grad(lambda f: jnp.sum(nde.resnet(f, y0) ** 2))(f)
    gb = jax.grad(lambda f: jnp.sum(nde.solve(f, y0, steps=6, solver="euler") ** 2))(f)
    assert jnp.allclose(ga.operator.weight, gb.operator.weight, rtol=1e-13)
    # More residual layers than parameter layers is Euler with more steps.
    assert jnp.allclose(
        nde.resnet(f, y0, layers=12),
        nde.solve(f, y0, steps=12, solver="euler"),
        rtol=1e-14,
    )


# Haber & Ruthotto's 2-D example: 20 residual layers h + 0.1 tanh(W h), b = 0, with a
# rotation, a contracting and an expanding W.
RESNET_2D = {
    "layers": 20,
    "alpha": 0.1,
    "weights": {
        "rotation": [[0, -1], [1, 0]],
        "contracting": [[-2, 0], [2, -2]],
        "expanding": [[2, -2], [0, 2]],
    },
}


@pytest.mark.parametrize("kind", ["rotation", "contracting", "expanding"])
def test_resnet_2d_stability_fixture(getkey, kind):
    L, alpha = RESNET_2D["layers"], RESNET_2D["alpha"]
    W = np.array(RESNET_2D["weights"][kind], dtype=np.float64)
    f = nde.fields.MLP(2, layers=L, t1=L * alpha, key=getkey())
    f = eqx.tree_at(lambda f: f.operator.weight, f, jnp.tile(W, (L, 1, 1)))
    h0 = np.array([0.3, -0.2])
    h = h0.copy()
    for _ in range(L):
        h = h + alpha * np.tanh(W @ h)
    out = nde.resnet(f, jnp.asarray(h0))
    np.testing.assert_allclose(np.asarray(out), h, rtol=1e-13)
    # The eigenvalues of W decide: -2 contracts, +2 expands, +-i rotates outwards
    # slowly (forward Euler on an imaginary spectrum).
    ratio = np.linalg.norm(h) / np.linalg.norm(h0)
    assert {
        "contracting": ratio < 0.5,
        "expanding": ratio > 2,
        "rotation": 1 < ratio < 1.2,
    }[kind]


def test_symplectic_euler_preserves_volume(getkey):
    f = nde.fields.Hamiltonian(3, 5, layers=4, key=getkey())
    s0 = jax.random.normal(getkey(), (6,))

    def flow(s):
        y, z = nde.solve(f, (s[:3], s[3:]), steps=40, solver="symplectic_euler")
        return jnp.concatenate([y, z])

    for mode in (jax.jacrev, jax.jacfwd):
        det = jnp.linalg.det(mode(flow)(s0))
        assert abs(det - 1) < 1e-10
    # Non-symplectic RK4 on the same field is not exactly volume preserving.
    det_rk4 = jnp.linalg.det(
        jax.jacrev(
            lambda s: jnp.concatenate(
                nde.solve(f, (s[:3], s[3:]), steps=4, solver="rk4")
            )
        )(s0)
    )
    assert abs(det_rk4 - 1) > 1e-10


def test_hyperbolic_leapfrog_recurrence_runs_backwards(getkey):
    n, L = 40, 4
    f = nde.fields.Hyperbolic(3, 5, layers=L, key=getkey())
    y0, v0 = jax.random.normal(getkey(), (2, 3))
    h = 1.0 / n
    times = np.arange(n + 1) / n
    ys, _ = nde.solve(f, (y0, v0), steps=n, solver="leapfrog", ts=jnp.asarray(times))
    F = lambda k, y: f.dz(times[k], y, None)  # noqa: E731
    # Forward: leapfrog is the network y_{k+1} = 2 y_k - y_{k-1} + h^2 F_k(y_k).
    for k in range(1, n):
        rhs = 2 * ys[k] - ys[k - 1] + h**2 * F(k, ys[k])
        assert jnp.allclose(ys[k + 1], rhs, rtol=0, atol=1e-13)
    # Backward: from the last two positions alone the recurrence recovers y_0.
    y_next, y_cur = ys[n], ys[n - 1]
    for k in range(n - 1, 0, -1):
        y_next, y_cur = y_cur, 2 * y_cur - y_next + h**2 * F(k, y_cur)
    assert jnp.allclose(y_cur, y0, rtol=0, atol=1e-10)


def test_dt0_equals_steps_and_ts(getkey):
    f = nde.fields.MLP(3, layers=4, key=getkey())
    y0 = jax.random.normal(getkey(), (3,))
    a = nde.solve(f, y0, steps=8, solver="midpoint")
    b = nde.solve(f, y0, dt0=0.125, solver="midpoint")
    assert jnp.allclose(a, b, rtol=1e-14)
    ts = jnp.array([0.25, 0.5, 1.0])
    ys = nde.solve(f, y0, steps=8, solver="midpoint", ts=ts)
    assert ys.shape == (3, 3)
    assert jnp.allclose(ys[-1], a, rtol=1e-13)
    assert jnp.allclose(
        ys[1], nde.solve(f, y0, steps=4, t1=0.5, solver="midpoint"), rtol=1e-13
    )


def test_jit_vmap_grad_and_no_recompilation(getkey):
    f = nde.fields.Hamiltonian(3, 4, layers=2, key=getkey())
    ys = jax.random.normal(getkey(), (2, 5, 3))

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def loss(f, y, z):
        out = jax.vmap(
            lambda a, b: nde.solve(f, (a, b), steps=6, solver="symplectic_euler")
        )(y, z)
        return jnp.mean(out[0] ** 2)

    g1 = eqx.filter_grad(loss)(f, ys[0], ys[1])
    g2 = eqx.filter_grad(loss)(f, ys[1], ys[0])
    assert not jnp.allclose(g1.operator.weight, g2.operator.weight)
    # vmap equals a loop over examples.
    batched = jax.vmap(lambda a: nde.solve(f, (a, a), steps=6, solver="leapfrog"))(
        ys[0]
    )
    for i in range(5):
        one = nde.solve(f, (ys[0, i], ys[0, i]), steps=6, solver="leapfrog")
        assert jnp.allclose(batched[0][i], one[0], rtol=1e-14)


def test_float32_state_stays_float32(getkey):
    # Under jax_enable_x64, t and dt must be cast to the state's dtype.
    f = nde.fields.MLP(3, layers=2, dtype=jnp.float32, key=getkey())
    y0 = jnp.ones(3, jnp.float32)
    for kw in [
        dict(steps=4),
        dict(steps=4, gradient="checkpoint"),
        dict(dt0=0.25),
        dict(solver="tsit5"),
    ]:
        assert nde.solve(f, y0, **kw).dtype == jnp.float32
    assert nde.resnet(f, y0).dtype == jnp.float32


def test_diffrax_solver_and_adjoint_instances(getkey):
    f = nde.fields.MLP(3, key=getkey())
    y0 = jax.random.normal(getkey(), (3,))
    a = nde.solve(f, y0, steps=10, solver=dfx.Ralston())
    b = nde.solve(
        f, y0, steps=10, solver=dfx.Ralston(), gradient=dfx.RecursiveCheckpointAdjoint()
    )
    assert jnp.allclose(a, b, rtol=1e-14)


def _blowup(t, y, args):
    return y**2  # y(t) = 1 / (1/y0 - t): blows up at t = 0.1 for y0 = 10


@pytest.mark.parametrize(
    "kw",
    [
        dict(steps=50, solver="euler"),
        dict(steps=50, solver="rk4", gradient="checkpoint"),
    ],
)
def test_nonfinite_state_raises_with_time(kw):
    y0 = jnp.array([10.0])
    with pytest.raises(Exception, match=r"non-finite.*t = 0\.\d+"):
        nde.solve(_blowup, y0, **kw)
    with pytest.raises(Exception, match="non-finite"):
        jax.jit(lambda y: nde.solve(_blowup, y, **kw))(y0)
    with pytest.raises(Exception, match="non-finite"):
        jax.grad(lambda y: jnp.sum(nde.solve(_blowup, y, **kw)))(y0)


def test_nonfinite_names_step_time():
    with pytest.raises(
        Exception, match=r"step (1[1-9]|2\d) of 100, at t = 0\.(1[1-9]|2\d)"
    ):
        nde.solve(_blowup, jnp.array([10.0]), steps=100, solver="euler")


def test_bad_input(getkey):
    f = nde.fields.MLP(3, key=getkey())
    h = nde.fields.Hamiltonian(3, 4, key=getkey())
    y0 = jnp.ones(3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        nde.solve(f, jnp.ones(4), steps=2)
    with pytest.raises(TypeError, match=r"tuple `\(y, z\)`"):
        nde.solve(h, y0, steps=2)
    with pytest.raises(TypeError, match="AbstractTwoStreamField"):
        nde.solve(f, y0, steps=2, solver="symplectic_euler")
    with pytest.raises(ValueError, match="Unknown solver 'rk5'.*euler, midpoint"):
        nde.solve(f, y0, steps=2, solver="rk5")
    with pytest.raises(ValueError, match="Unknown gradient 'backprop'.*discretize"):
        nde.solve(f, y0, steps=2, gradient="backprop")
    with pytest.raises(ValueError, match="not both"):
        nde.solve(f, y0, steps=2, dt0=0.5)
    with pytest.raises(ValueError, match="no error estimate.*`steps=`"):
        nde.solve(f, y0, solver="rk4")
    with pytest.raises(ValueError, match="positive integer"):
        nde.solve(f, y0, steps=0)
    with pytest.raises(ValueError, match="interval is empty"):
        nde.solve(f, y0, t0=1.0, t1=1.0, steps=2)
    with pytest.raises(TypeError, match="floating point"):
        nde.solve(f, jnp.ones(3, jnp.int32), steps=2)
    with pytest.raises(ValueError, match="reversible solver.*symplectic_euler"):
        nde.solve(f, y0, solver="tsit5", gradient="reversible")
    with pytest.raises(ValueError, match="reversible solver"):
        nde.solve(f, y0, steps=2, solver="rk4", gradient="reversible")
    with pytest.raises(ValueError, match="adjoint.*one-term solver"):
        nde.solve(h, (y0, y0), steps=2, solver="symplectic_euler", gradient="adjoint")
    with pytest.raises(ValueError, match="BacksolveAdjoint.*one-term solver"):
        nde.solve(
            h,
            (y0, y0),
            steps=2,
            solver="symplectic_euler",
            gradient=dfx.BacksolveAdjoint(),
        )
    with pytest.raises(ValueError, match="rtol"):
        nde.solve(f, y0, steps=2, rtol=1e-3)
    with pytest.raises(TypeError, match="dtype float64 for a state of dtype float32"):
        nde.solve(f, jnp.ones(3, jnp.float32), steps=2)
    with pytest.raises(ValueError, match="shaped like y"):
        nde.solve(lambda t, y, a: y[:2], y0, steps=2)
    with pytest.raises(ValueError, match="layers"):
        nde.resnet(f, y0, layers=0)


def test_all_gradient_modes_share_the_dt0_grid(getkey):
    f = nde.fields.MLP(3, key=getkey())
    y0 = jax.random.normal(getkey(), (3,))
    ref = nde.solve(f, y0, dt0=0.3, solver="euler")  # steps at 0, .3, .6, .9, 1
    for gradient in ["checkpoint", "adjoint", dfx.BacksolveAdjoint()]:
        out = nde.solve(f, y0, dt0=0.3, solver="euler", gradient=gradient)
        assert jnp.allclose(out, ref, rtol=1e-14)
    manual = y0
    for a, b in [(0, 0.3), (0.3, 0.6), (0.6, 0.9), (0.9, 1.0)]:
        manual = manual + (b - a) * f(a, manual, None)
    assert jnp.allclose(ref, manual, rtol=1e-14)


def test_dt0_and_error_times_under_jit():
    blow = jnp.array([10.0])
    out = eqx.filter_jit(
        lambda y: nde.solve(_blowup, y, dt0=0.01, t1=0.05, solver="euler")
    )(blow)
    assert out.shape == (1,)
    with pytest.raises(Exception, match=r"step \d+ of 50, at t = 0\.\d+"):
        eqx.filter_jit(lambda y: nde.solve(_blowup, y, steps=50, solver="euler"))(blow)


def test_float32_grid_ends_exactly_at_t1(getkey):
    f = nde.fields.MLP(3, dtype=jnp.float32, key=getkey())
    y0 = jnp.ones(3, jnp.float32)
    a = nde.solve(f, y0, t0=1.1, t1=3.3, steps=3, gradient="checkpoint")
    b = nde.solve(f, y0, t0=1.1, t1=3.3, steps=3)
    assert jnp.allclose(a, b, rtol=1e-6)


def test_more_bad_input(getkey):
    f = nde.fields.MLP(3, key=getkey())
    y0 = jnp.ones(3)
    with pytest.raises(ValueError, match="1-D array"):
        nde.solve(f, y0, steps=4, ts=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="run strictly up"):
        nde.solve(f, y0, steps=4, ts=jnp.array([0.5, 0.2]))
    with pytest.raises(ValueError, match="must lie between"):
        nde.solve(f, y0, steps=4, ts=jnp.array([0.5, 2.0]))
    with pytest.raises(ValueError, match="`checkpoints` must be a positive"):
        nde.gradients.Checkpoint(checkpoints=0)
    with pytest.raises(ValueError, match="`levels`.*at least 2"):
        nde.gradients.Checkpoint(levels=1)
    # NumPy integers are integers.
    assert jnp.allclose(nde.solve(f, y0, steps=np.int64(4)), nde.solve(f, y0, steps=4))
