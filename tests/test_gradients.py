"""The gradient modes of `neuralde.gradients`: objects on one fixed-step loop."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import neuralde as nde
from neuralde import gradients as G


def _mlp(key, dim=3, layers=4):
    return nde.fields.MLP(dim, layers=layers, key=key)


def _grad(field, y0, **kw):
    """d/d(field, y0) of a scalar of the solve, as one flat vector."""

    def loss(params):
        f, y = params
        return jnp.sum(jnp.sin(nde.solve(f, y, **kw)))

    grads = eqx.filter_grad(loss)((field, y0))
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(grads)])


def test_names_are_default_instances():
    assert G.as_gradient("discretize") == G.Discretize()
    assert G.as_gradient("checkpoint") == G.Checkpoint()
    assert G.as_gradient("adjoint") == G.Adjoint()
    assert G.as_gradient("reversible") == G.Reversible()
    assert G.GRADIENT_NAMES == ("discretize", "checkpoint", "adjoint", "reversible")
    adjoint = dfx.RecursiveCheckpointAdjoint()
    assert G.as_gradient(adjoint) == G.Diffrax(adjoint)
    with pytest.raises(ValueError, match="Unknown gradient 'backprop'"):
        G.as_gradient("backprop")
    # One word, one thing: the reversible solver wrapper has a name of its own.
    assert not hasattr(nde, "Reversible")
    assert issubclass(nde.ReversibleRK, dfx.AbstractSolver)
    assert issubclass(G.Reversible, G.AbstractGradient)


@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("steps", [1, 7, 30])
def test_checkpoint_equals_discretize(getkey, levels, steps):
    field, y0 = _mlp(getkey()), jax.random.normal(getkey(), (3,))
    ref = _grad(field, y0, steps=steps, solver="rk4")
    for checkpoints in (None, 2, 4):
        mode = G.Checkpoint(checkpoints=checkpoints, levels=levels)
        got = _grad(field, y0, steps=steps, solver="rk4", gradient=mode)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


def test_segment_sizes():
    assert nde._steps.segment_sizes(100, 2, None) == (10,)
    assert nde._steps.segment_sizes(1000, 2, None) == (25,)  # divides 1000
    assert nde._steps.segment_sizes(997, 2, None) == (32,)
    assert nde._steps.segment_sizes(1000, 2, 10) == (100,)
    assert nde._steps.segment_sizes(1000, 3, None) == (100, 10)


def test_forward_mode_passes_through_checkpoint(getkey):
    # diffrax's checkpointing is a custom VJP that refuses `jax.jvp` (diffrax#691).
    field, y0 = _mlp(getkey()), jax.random.normal(getkey(), (3,))
    jac = {
        g: jax.jacfwd(lambda y: nde.solve(field, y, steps=20, gradient=g))(y0)
        for g in ("discretize", "checkpoint")
    }
    np.testing.assert_allclose(jac["checkpoint"], jac["discretize"], rtol=1e-13)
    ref = jax.jacrev(lambda y: nde.solve(field, y, steps=20))(y0)
    np.testing.assert_allclose(jac["checkpoint"], ref, rtol=1e-12)


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_checkpoint_memory_grows_as_sqrt_steps(getkey):
    field = _mlp(getkey(), dim=64, layers=1)
    y0 = jnp.ones((16, 64))

    def temp(gradient, steps):
        def loss(f):
            return jnp.sum(nde.solve(f, y0, steps=steps, gradient=gradient) ** 2)

        params, static = eqx.partition(field, eqx.is_array)
        return _temp_bytes(jax.grad(lambda p: loss(eqx.combine(p, static))), params)

    dis = temp("discretize", 1600) / temp("discretize", 100)
    chk = temp("checkpoint", 1600) / temp("checkpoint", 100)
    # 16x the steps: discretize stores 16x the states (measured 13x of its temp
    # buffers), checkpointing about sqrt(16) = 4x (measured 2.2x).
    assert dis > 10
    assert chk < 6


@pytest.mark.parametrize("solver", ["euler", "rk4", "reversible_heun", "midpoint"])
def test_adjoint_loop_equals_diffrax_backsolve(getkey, solver):
    # neuralde's fixed-step adjoint solves the same augmented system as diffrax's
    # `BacksolveAdjoint` on the reversed grid: the same numbers to round-off.
    field, y0 = _mlp(getkey()), jax.random.normal(getkey(), (3,))
    kw = dict(steps=12, solver=solver)
    ours = _grad(field, y0, gradient="adjoint", **kw)
    theirs = _grad(field, y0, gradient=dfx.BacksolveAdjoint(), **kw)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)
    # A backward solver of its own is used.
    other = G.Adjoint(solver="heun" if solver == "euler" else "euler")
    assert not np.allclose(_grad(field, y0, gradient=other, **kw), ours, rtol=1e-6)


def test_adjoint_converges_to_discretize(getkey):
    # The continuous adjoint is the gradient of the exact flow; the discrete
    # gradient converges to it at the solver's order (one layer: no boundaries).
    field = _mlp(getkey(), layers=1)
    y0 = jax.random.normal(getkey(), (3,))
    errors = []
    for n in (8, 16, 32):
        a = _grad(field, y0, steps=n, solver="rk4", gradient="adjoint")
        d = _grad(field, y0, steps=n, solver="rk4")
        errors.append(float(jnp.max(jnp.abs(a - d))))
    slopes = -np.diff(np.log2(errors))
    assert np.all(slopes > 3.7), errors


MODES = ["discretize", "checkpoint", "adjoint", "reversible"]


@pytest.mark.parametrize("gradient", MODES)
def test_vmap_grad_and_jacrev(getkey, gradient):
    # Under `jax.vmap` every mode is correct: per-example gradients equal those of
    # one example at a time, and sum to the batched solve's gradient; `jacrev`
    # equals the rows of gradients. The exact modes equal discretize too.
    field = _mlp(getkey())
    y0 = jax.random.normal(getkey(), (4, 3))
    kw = dict(steps=8, solver="reversible_heun")

    def loss(f, y, gradient=gradient):
        return jnp.sum(jnp.sin(nde.solve(f, y, gradient=gradient, **kw)))

    grad = eqx.filter_grad(loss)
    per_example = jax.vmap(grad, in_axes=(None, 0))(field, y0)
    one_by_one = [grad(field, y) for y in y0]
    total = eqx.filter_grad(lambda f: loss(f, y0))(field)  # batched by shape
    exact = jax.vmap(lambda f, y: grad(f, y, "discretize"), in_axes=(None, 0))(
        field, y0
    )
    for k, (a, b, c) in enumerate(
        zip(
            jax.tree.leaves(per_example), jax.tree.leaves(total), jax.tree.leaves(exact)
        )
    ):
        for i, g in enumerate(one_by_one):
            np.testing.assert_allclose(a[i], jax.tree.leaves(g)[k], rtol=1e-10)
        np.testing.assert_allclose(jnp.sum(a, 0), b, rtol=1e-10, atol=1e-13)
        if gradient != "adjoint":
            np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-13)

    def out(y):
        return nde.solve(field, y, gradient=gradient, **kw)

    jac = jax.jacrev(out)(y0[0])
    rows = [jax.grad(lambda y: out(y)[i])(y0[0]) for i in range(3)]
    np.testing.assert_allclose(jac, jnp.stack(rows), rtol=1e-12)
    if gradient != "adjoint":
        ref = jax.jacrev(lambda y: nde.solve(field, y, **kw))(y0[0])
        np.testing.assert_allclose(jac, ref, rtol=1e-10)


def test_batch_by_shape(getkey):
    field = _mlp(getkey())
    y0 = jax.random.normal(getkey(), (5, 3))
    batch = nde.solve(field, y0, steps=6)
    each = jax.vmap(lambda y: nde.solve(field, y, steps=6))(y0)
    np.testing.assert_array_equal(batch, each)
    # Two streams, and a field of the library inside `ODEBlock`.
    ham = nde.fields.Hamiltonian(3, 4, key=getkey())
    block = nde.nn.ODEBlock(ham, steps=4, solver="leapfrog", gradient="reversible")
    out = block((y0, jnp.zeros_like(y0)))
    ref = jax.vmap(lambda y: block((y, jnp.zeros_like(y))))(y0)
    for a, b in zip(out, ref):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    # A plain callable does not declare its shape: a batch needs `batched=True`.
    rate = lambda t, y, a: -y  # noqa: E731
    assert nde.solve(rate, y0, steps=3).shape == (5, 3)
    np.testing.assert_allclose(
        nde.solve(rate, y0, steps=3, batched=True), nde.solve(rate, y0, steps=3)
    )
    with pytest.raises(TypeError, match="`batched` must be"):
        nde.solve(field, y0, steps=3, batched="yes")


class HeunByHand(G.AbstractGradient):
    """A mode defined outside the package: Heun's method written by hand, as a
    Python loop (few steps), differentiated by JAX."""

    def check(self, solver, *, adaptive, ts):
        if adaptive or ts:
            raise ValueError("HeunByHand takes fixed steps and no `ts`.")

    def solve(self, problem, y0):
        grid, rate = problem.grid, problem.terms.vf
        y = y0
        for i in range(grid.n):
            ta, tb = grid(i), grid(i + 1)
            k1 = rate(ta, y, problem.args)
            k2 = rate(tb, y + (tb - ta) * k1, problem.args)
            y = y + (tb - ta) / 2 * (k1 + k2)
        return y


def test_mode_defined_outside_the_package(getkey):
    field, y0 = _mlp(getkey()), jax.random.normal(getkey(), (3,))
    got = _grad(field, y0, steps=5, solver="heun", gradient=HeunByHand())
    ref = _grad(field, y0, steps=5, solver="heun")
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    block = nde.nn.ODEBlock(field, steps=5, solver="heun", gradient=HeunByHand())
    np.testing.assert_allclose(block(y0), nde.solve(field, y0, steps=5, solver="heun"))
    with pytest.raises(ValueError, match="HeunByHand takes fixed steps"):
        nde.solve(field, y0, solver="heun", rtol=1e-3, gradient=HeunByHand())


def _blowup(t, y, args):
    return y**2  # y(t) = y0 / (1 - y0 t): infinite at t = 1 / y0


@pytest.mark.parametrize("gradient", ["discretize", "checkpoint", "adjoint"])
def test_nonfinite_raises_under_jit_grad(gradient):
    # The primal output is unused by `grad`; the error must survive anyway.
    fn = jax.jit(
        jax.grad(lambda y0: nde.solve(_blowup, y0, steps=1000, gradient=gradient).sum())
    )
    with pytest.raises(Exception, match=r"non-finite in step \d+ of 1000, at t = 0\.1"):
        fn(jnp.array([10.0]))
    assert jnp.isfinite(fn(jnp.array([0.1]))).all()


def test_nonfinite_reversible_raises_under_grad():
    fn = jax.jit(
        jax.grad(
            lambda y0: nde.solve(
                _blowup, y0, steps=1000, solver="reversible_heun", gradient="reversible"
            ).sum()
        )
    )
    with pytest.raises(Exception, match=r"at t = 0\.1"):
        fn(jnp.array([10.0]))


@pytest.mark.parametrize("gradient", MODES)
def test_nonfinite_under_vmap_names_the_failing_example(gradient):
    y0 = jnp.array([[0.1], [10.0]])
    solve = lambda y: nde.solve(  # noqa: E731
        _blowup, y, steps=1000, solver="reversible_heun", gradient=gradient
    )
    with pytest.raises(Exception, match=r"at t = 0\.1\d*\."):
        jax.jit(jax.vmap(solve))(y0)
    with pytest.raises(Exception, match=r"at t = 0\.1\d*\."):
        nde.solve(
            _blowup,
            y0,
            steps=1000,
            solver="reversible_heun",
            gradient=gradient,
            batched=True,
        )


def test_nonfinite_adaptive_names_the_time():
    # Solves through `diffrax.diffeqsolve` (here fixed steps saved at `ts`) name
    # the time of the first evaluation at a non-finite state, also under vmap.
    ts = jnp.array([0.05, 0.5])

    def solve(y):
        return nde.solve(_blowup, y, steps=1000, ts=ts, solver="euler")

    with pytest.raises(Exception, match=r"non-finite at t = 0\.1\d*\."):
        jax.jit(solve)(jnp.array([10.0]))
    with pytest.raises(Exception, match=r"non-finite at t = 0\.1\d*\."):
        jax.jit(jax.vmap(solve))(jnp.array([[0.1], [10.0]]))


def test_messages_name_any_step_lazily():
    msgs = nde._nonfinite.StepMessages(10**6, 0.0, 2.0, None)
    assert len(msgs) == 10**6
    assert msgs[10**6 - 1] == (
        "neuralde: the state became non-finite in step 1 of 1000000, at t = 2e-06."
    )
    assert msgs[0].endswith("in step 1000000 of 1000000, at t = 2.")
    index = int(msgs.index(jnp.asarray(499_999)))
    assert "step 500000 of" in msgs[index] and "at t = 1." in msgs[index]
    times = nde._nonfinite.TimeMessages()
    assert times[int(times.index(jnp.asarray(True), 0.123456))].endswith("0.123456.")


_TRACES = []


class Counting(eqx.Module):
    """A field that counts how often it is traced."""

    weight: jax.Array

    def __call__(self, t, y, args):
        _TRACES.append(1)
        return jnp.tanh(self.weight @ y)


@pytest.mark.parametrize("gradient", MODES)
def test_eager_solve_compiles_once(getkey, gradient):
    field = Counting(jax.random.normal(getkey(), (3, 3)))
    y0 = jnp.ones(3)
    kw = dict(steps=10, solver="reversible_heun", gradient=gradient)
    nde.solve(field, y0, **kw)
    traced = len(_TRACES)
    for k in range(5):
        nde.solve(field, y0 + k, **kw)
    # Each call traces the field once, for the shape check of `solve`'s arguments;
    # a compilation would trace it once per stage (at least 2 here).
    assert len(_TRACES) - traced == 5
    assert traced - 1 >= 2


def test_adjoint_fixed_steps_with_ts(getkey):
    field, y0 = _mlp(getkey(), layers=1), jax.random.normal(getkey(), (3,))
    ts = jnp.array([0.25, 0.5, 1.0])

    def loss(f, gradient):
        return jnp.sum(jnp.sin(nde.solve(f, y0, steps=40, ts=ts, gradient=gradient)))

    a = eqx.filter_grad(lambda f: loss(f, "adjoint"))(field)
    d = eqx.filter_grad(lambda f: loss(f, "discretize"))(field)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(d)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)


def test_time_gradients(getkey):
    field, y0 = _mlp(getkey(), layers=1), jax.random.normal(getkey(), (3,))

    def loss(t0, t1, gradient, solver="rk4"):
        out = nde.solve(
            field, y0, t0=t0, t1=t1, steps=40, solver=solver, gradient=gradient
        )
        return jnp.sum(jnp.sin(out))

    t0, t1 = 0.1, 0.9
    d = jax.grad(loss, argnums=(0, 1))(t0, t1, "discretize")
    h = 1e-6
    fd = [
        (loss(t0 + h, t1, "discretize") - loss(t0 - h, t1, "discretize")) / (2 * h),
        (loss(t0, t1 + h, "discretize") - loss(t0, t1 - h, "discretize")) / (2 * h),
    ]
    np.testing.assert_allclose(d, fd, rtol=1e-7)
    for gradient in ("checkpoint", "adjoint"):
        got = jax.grad(loss, argnums=(0, 1))(t0, t1, gradient)
        # The adjoint's is that of the exact flow: the discrete one to O(h^4).
        np.testing.assert_allclose(
            got, d, rtol=1e-7 if gradient == "adjoint" else 1e-13
        )
    with pytest.raises(ValueError, match="reversible.*does not differentiate.*t0"):
        jax.grad(loss, argnums=1)(t0, t1, "reversible", "reversible_heun")


def test_more_bad_options(getkey):
    field, y0 = _mlp(getkey()), jnp.ones(3)
    with pytest.raises(ValueError, match="`rtol` must be positive"):
        nde.solve(field, y0, solver="tsit5", rtol=-1e-3)
    with pytest.raises(ValueError, match="`max_steps` must be a positive integer"):
        nde.solve(field, y0, solver="tsit5", max_steps=0)
    with pytest.raises(ValueError, match="`steps=` fixes them"):
        nde.solve(field, y0, steps=3, atol=1e-3)
    with pytest.raises(ValueError, match="sign of `t1 - t0`"):
        nde.solve(field, y0, t0=1.0, t1=0.0, dt0=0.1)
    # An empty interval of traced times is refused inside `jit`.
    with pytest.raises(Exception, match="interval is empty"):
        jax.jit(lambda t: nde.solve(field, y0, t0=t, t1=t, steps=3))(0.5)


def test_one_rule_for_adaptive_steps(getkey):
    # `dt0=` alone is a fixed step for every solver, as in diffrax without a
    # controller; tolerances make any solver with an error estimate adaptive.
    rate = lambda t, y, a: -y + jnp.sin(3 * t)  # noqa: E731
    y0 = jnp.array([1.0])
    term = dfx.ODETerm(rate)

    def diffrax(solver, dt0, controller):
        sol = dfx.diffeqsolve(
            term, solver, 0.0, 1.0, dt0, y0, stepsize_controller=controller
        )
        return sol.ys[-1]

    implicit = dfx.ImplicitEuler(root_finder=dfx.VeryChord(rtol=1e-10, atol=1e-10))
    ours = nde.solve(rate, y0, dt0=0.1, solver=implicit)
    np.testing.assert_allclose(
        ours, diffrax(implicit, 0.1, dfx.ConstantStepSize()), rtol=1e-12
    )
    with pytest.raises(ValueError, match="needs tolerances for its root finder"):
        nde.solve(rate, y0, dt0=0.1, solver=dfx.ImplicitEuler())
    ours = nde.solve(rate, y0, solver="heun", rtol=1e-6, atol=1e-8)
    pid = dfx.PIDController(rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours, diffrax(dfx.Heun(), None, pid), rtol=1e-12)
    with pytest.raises(ValueError, match="'rk4' has no error estimate"):
        nde.solve(rate, y0, solver="rk4", rtol=1e-6)


def test_batched_adaptive_agrees_with_vmap_to_tolerance(getkey):
    # A batch shares one step size, vmap takes one per example: both meet the
    # tolerance, neither equals the other.
    field = _mlp(getkey(), layers=1)
    y0 = jax.random.normal(getkey(), (4, 3))

    def each(**kw):
        return jax.vmap(lambda y: nde.solve(field, y, solver="tsit5", **kw))(y0)

    exact = each(rtol=1e-12, atol=1e-14, max_steps=100_000)
    batch = nde.solve(field, y0, solver="tsit5", rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(batch, exact, rtol=0, atol=1e-7)
    np.testing.assert_allclose(each(rtol=1e-8, atol=1e-10), exact, rtol=0, atol=1e-7)
    assert not np.array_equal(batch, each(rtol=1e-8, atol=1e-10))


@pytest.mark.parametrize("gradient", MODES)
def test_reverse_time(getkey, gradient):
    field, y0 = _mlp(getkey()), jax.random.normal(getkey(), (3,))
    kw = dict(steps=200, solver="reversible_heun", gradient=gradient)
    forward = nde.solve(field, y0, **kw)
    back = nde.solve(field, forward, t0=1.0, t1=0.0, **kw)
    np.testing.assert_allclose(back, y0, rtol=1e-5, atol=1e-6)
    # Against diffrax integrating backwards, and the gradient against discretize.
    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        dfx.ReversibleHeun(),
        1.0,
        0.0,
        None,
        forward,
        stepsize_controller=dfx.StepTo(ts=jnp.linspace(1.0, 0.0, 201)),
    )
    np.testing.assert_allclose(back, sol.ys[-1], rtol=1e-12)
    got = _grad(field, forward, t0=1.0, t1=0.0, **kw)
    ref = _grad(field, forward, t0=1.0, t1=0.0, steps=200, solver="reversible_heun")
    tol = 1e-4 if gradient == "adjoint" else 1e-10
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    ts = jnp.array([0.75, 0.25])
    if gradient != "reversible":
        out = nde.solve(field, forward, t0=1.0, t1=0.0, ts=ts, **kw)
        assert out.shape == (2, 3)
    with pytest.raises(ValueError, match="run strictly down"):
        nde.solve(field, forward, t0=1.0, t1=0.0, steps=4, ts=ts[::-1])
