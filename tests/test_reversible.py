import equinox as eqx
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import neuralde as nde


class TwoStream(nde.fields.AbstractTwoStreamField):
    """A user's two-stream field whose weights come in through `args`."""

    layers: int = 1
    t1: float = 1.0

    def dy(self, t, z, args):
        return args["A"].T @ jnp.sin(args["A"] @ z)

    def dz(self, t, y, args):
        return -args["A"].T @ jnp.tanh(args["A"] @ y + t)


def _case(name, key):
    k1, k2, k3 = jax.random.split(key, 3)
    y = jax.random.normal(k2, (3,))
    z = jax.random.normal(k3, (3,))
    if name == "hamiltonian":
        return (
            nde.fields.Hamiltonian(3, 5, layers=4, key=k1),
            (y, z),
            "symplectic_euler",
        )
    if name == "hyperbolic":
        return nde.fields.Hyperbolic(3, 5, layers=4, key=k1), (y, z), "leapfrog"
    if name == "mlp":
        return nde.fields.MLP(3, layers=4, key=k1), y, "reversible_heun"
    if name == "antisymmetric":
        field = nde.fields.Antisymmetric(3, layers=4, key=k1)
        return field, y, nde.ReversibleRK("rk4", coupling=0.999)
    raise ValueError(name)


CASES = ["hamiltonian", "hyperbolic", "mlp", "antisymmetric"]


def _loss_fn(field, y0, solver, gradient, steps=50, args=None):
    params, static = eqx.partition((field, y0, args), eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def fn(x):
        f, y, a = eqx.combine(unravel(x), static)
        out = nde.solve(f, y, steps=steps, solver=solver, gradient=gradient, args=a)
        return sum(jnp.sum(jnp.sin(o)) for o in jax.tree.leaves(out))

    return fn, flat


@pytest.mark.parametrize("name", CASES)
def test_reversible_gradient_equals_discretize(getkey, name):
    field, y0, solver = _case(name, getkey())
    f_rev, x = _loss_fn(field, y0, solver, "reversible")
    f_dis, _ = _loss_fn(field, y0, solver, "discretize")
    # The forward pass is the same scan of the same steps: bit for bit.
    assert f_rev(x) == f_dis(x)
    g_rev, g_dis = jax.grad(f_rev)(x), jax.grad(f_dis)(x)
    rel = jnp.max(jnp.abs(g_rev - g_dis)) / jnp.max(jnp.abs(g_dis))
    assert rel < 1e-10, rel


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_vmapped_reversible_gradient_equals_discretize(getkey, name):
    # Under vmap the reverse pass runs on the whole batch (a custom batching rule).
    field, _, solver = _case(name, getkey())
    ys = jax.random.normal(getkey(), (2, 3, 3))
    two = name in ("hamiltonian", "hyperbolic")

    def grad(gradient):
        def loss(f):
            def one(y, z):
                out = nde.solve(
                    f, (y, z) if two else y, steps=20, solver=solver, gradient=gradient
                )
                return sum(jnp.sum(jnp.sin(o)) for o in jax.tree.leaves(out))

            return jnp.sum(jax.vmap(one)(ys[0], ys[1]))

        return ravel_pytree(
            eqx.filter(eqx.filter_grad(loss)(field), eqx.is_inexact_array)
        )[0]

    g_rev, g_dis = grad("reversible"), grad("discretize")
    assert jnp.max(jnp.abs(g_rev - g_dis)) < 1e-10 * jnp.max(jnp.abs(g_dis))


@pytest.mark.parametrize("name", CASES)
def test_reversible_gradient_finite_differences(getkey, name):
    field, y0, solver = _case(name, getkey())
    fn, x = _loss_fn(field, y0, solver, "reversible", steps=12)
    jax.test_util.check_grads(
        fn, (x,), order=1, modes=["rev"], eps=1e-5, atol=1e-7, rtol=1e-7
    )


@pytest.mark.parametrize("solver", ["symplectic_euler", "leapfrog"])
def test_gradient_flows_to_args_of_user_two_stream_field(getkey, solver):
    args = {"A": jax.random.normal(getkey(), (4, 3))}
    y0 = tuple(jax.random.normal(getkey(), (2, 3)))
    f_rev, x = _loss_fn(TwoStream(), y0, solver, "reversible", args=args)
    f_dis, _ = _loss_fn(TwoStream(), y0, solver, "discretize", args=args)
    g_rev, g_dis = jax.grad(f_rev)(x), jax.grad(f_dis)(x)
    assert jnp.max(jnp.abs(g_rev - g_dis)) < 1e-10 * jnp.max(jnp.abs(g_dis))
    jax.test_util.check_grads(
        f_rev, (x,), order=1, modes=["rev"], eps=1e-5, atol=1e-7, rtol=1e-7
    )


@pytest.mark.parametrize("solver", ["reversible_heun", nde.ReversibleRK("heun")])
def test_gradient_flows_to_args_one_stream(getkey, solver):
    field = lambda t, y, args: jnp.tanh(args["W"] @ y + args["b"])  # noqa: E731
    args = {"W": jax.random.normal(getkey(), (3, 3)), "b": jnp.ones(3)}
    y0 = jax.random.normal(getkey(), (3,))
    f_rev, x = _loss_fn(field, y0, solver, "reversible", args=args)
    f_dis, _ = _loss_fn(field, y0, solver, "discretize", args=args)
    g_rev, g_dis = jax.grad(f_rev)(x), jax.grad(f_dis)(x)
    assert jnp.max(jnp.abs(g_rev - g_dis)) < 1e-10 * jnp.max(jnp.abs(g_dis))


@pytest.mark.parametrize("name", CASES)
def test_reconstruction_error_after_1000_steps(getkey, name):
    field, y0, solver = _case(name, getkey())
    err = nde.stability.reversibility_error(field, y0, solver=solver, steps=1000)
    assert err < 1e-8
    assert err > 0 or name != "antisymmetric"  # a real measurement, not a constant


def test_reversibility_error_grows_at_the_predicted_rate(getkey):
    # The McCallum-Foster inverse divides by the coupling at every step, so the
    # round-off of the rebuilt state grows about like coupling**-steps: with
    # coupling 0.5, by 2**20 ~ 1e6 from 10 to 30 steps. The diagnostic must see it.
    field = nde.fields.Antisymmetric(4, key=getkey())
    y0 = jax.random.normal(getkey(), (4,))
    solver = nde.ReversibleRK("rk4", coupling=0.5)
    err = [
        nde.stability.reversibility_error(
            field, y0, solver=solver, steps=n, t1=0.05 * n
        )
        for n in (10, 30)
    ]
    assert 1e5 < err[1] / err[0] < 1e7, err


def test_mccallum_foster_keeps_solver_order(getkey):
    field = nde.fields.MLP(3, key=getkey())
    y0 = jax.random.normal(getkey(), (3,))
    ref = nde.solve(field, y0, solver="tsit5", rtol=1e-13, atol=1e-13)
    for inner, order in [("heun", 2), ("rk4", 4)]:
        ns = np.array([16, 32, 64])
        errs = [
            float(
                jnp.linalg.norm(
                    nde.solve(field, y0, steps=int(n), solver=nde.ReversibleRK(inner))
                    - ref
                )
            )
            for n in ns
        ]
        slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
        assert abs(slope - order) < 0.3, (inner, slope)


@pytest.mark.slow
def test_checkpoint_on_reversible_wrapper_matches(getkey):
    field, y0, solver = _case("antisymmetric", getkey())
    f_chk, x = _loss_fn(field, y0, solver, "checkpoint", steps=20)
    f_rev, _ = _loss_fn(field, y0, solver, "reversible", steps=20)
    assert jnp.allclose(jax.grad(f_chk)(x), jax.grad(f_rev)(x), rtol=1e-11, atol=1e-14)


@pytest.mark.slow
def test_jit_vmap_and_training_a_reversible_block(getkey):
    class Model(eqx.Module):
        field: nde.fields.Hamiltonian
        head: eqx.nn.Linear

        def __call__(self, x):
            y, z = nde.solve(
                self.field,
                (x, jnp.zeros_like(x)),
                steps=16,
                solver="leapfrog",
                gradient="reversible",
            )
            return self.head(y)

    model = Model(
        nde.fields.Hamiltonian(2, 8, layers=4, key=getkey()),
        eqx.nn.Linear(2, 1, key=getkey()),
    )
    x = jax.random.normal(getkey(), (64, 2))
    target = jnp.sign(x[:, :1] * x[:, 1:])  # XOR-like labels in +-1
    opt = optax.adam(3e-2)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def train_step(model, state):
        loss = lambda m: jnp.mean((jax.vmap(m)(x) - target) ** 2)  # noqa: E731
        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, state = opt.update(grads, state, model)
        return eqx.apply_updates(model, updates), state, value

    # The vmapped reversible gradient equals the vmapped discretize one.
    def loss_with(gradient):
        def one(m, xi):
            y, _ = nde.solve(
                m.field,
                (xi, jnp.zeros_like(xi)),
                steps=16,
                solver="leapfrog",
                gradient=gradient,
            )
            return m.head(y)

        return lambda m: jnp.mean((jax.vmap(one, (None, 0))(m, x) - target) ** 2)

    g_rev = eqx.filter_grad(loss_with("reversible"))(model)
    g_dis = eqx.filter_grad(loss_with("discretize"))(model)
    assert jnp.allclose(
        g_rev.field.operator.weight, g_dis.field.operator.weight, rtol=1e-10, atol=1e-14
    )
    losses = []
    for _ in range(30):
        model, state, value = train_step(model, state)
        losses.append(float(value))
    assert losses[-1] < 0.8 * losses[0]


def test_reversible_memory_does_not_grow_with_steps(getkey):
    # XLA's compiled memory analysis: the temporary buffers of the gradient.
    field, y0, solver = _case("hamiltonian", getkey())

    def temp_bytes(gradient, steps):
        fn, x = _loss_fn(field, y0, solver, gradient, steps=steps)
        compiled = jax.jit(jax.grad(fn)).lower(x).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    rev = [temp_bytes("reversible", n) for n in (100, 1000)]
    dis = [temp_bytes("discretize", n) for n in (100, 1000)]
    assert rev[1] <= 1.1 * rev[0]
    assert dis[1] > 5 * dis[0]


def test_bad_input(getkey):
    field, y0, _ = _case("mlp", getkey())
    with pytest.raises(
        ValueError, match="reversible solver.*symplectic_euler.*adaptive"
    ):
        nde.solve(field, y0, solver="tsit5", gradient="reversible")
    with pytest.raises(ValueError, match="reversible solver.*Reversible"):
        nde.solve(field, y0, steps=4, solver="rk4", gradient="reversible")
    with pytest.raises(ValueError, match="final state only"):
        nde.solve(
            field,
            y0,
            steps=4,
            solver="reversible_heun",
            gradient="reversible",
            ts=jnp.array([0.5, 1.0]),
        )
    with pytest.raises(ValueError, match="explicit Runge-Kutta"):
        nde.ReversibleRK("symplectic_euler")
    with pytest.raises(ValueError, match="coupling"):
        nde.ReversibleRK("rk4", coupling=0.0)
    with pytest.raises(ValueError, match="reversible solver"):
        nde.stability.reversibility_error(field, y0, solver="euler", steps=4)


@pytest.mark.slow
def test_vmap_rule_branches(getkey):
    # Shared parameters take the batched reverse pass; per-example parameters (vmap
    # over fields) fall back to one pass per example; nested vmaps compose.
    keys = jax.random.split(getkey(), 3)
    fields = eqx.filter_vmap(lambda k: nde.fields.MLP(3, layers=2, key=k))(keys)
    ys = jax.random.normal(getkey(), (3, 3))

    def loss(field, y, gradient):
        out = nde.solve(field, y, steps=8, solver="reversible_heun", gradient=gradient)
        return jnp.sum(jnp.sin(out))

    def per_example(gradient):
        return eqx.filter_vmap(eqx.filter_grad(lambda f, y: loss(f, y, gradient)))(
            fields, ys
        )

    g_rev, g_dis = per_example("reversible"), per_example("discretize")
    assert jnp.allclose(g_rev.operator.weight, g_dis.operator.weight, rtol=1e-12)

    field = jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, fields)
    yy = jax.random.normal(getkey(), (2, 4, 3))

    def nested(gradient):
        def total(f):
            inner = jax.vmap(jax.vmap(lambda y: loss(f, y, gradient)))
            return jnp.sum(inner(yy))

        return eqx.filter_grad(total)(field)

    assert jnp.allclose(
        nested("reversible").operator.weight,
        nested("discretize").operator.weight,
        rtol=1e-12,
    )


def test_per_example_gradients_and_jacobians(getkey):
    # vmap(grad) and jacrev must not see batch-summed cotangents.
    field, _, solver = _case("hamiltonian", getkey())
    ys = jax.random.normal(getkey(), (3, 3))

    def loss(f, y, gradient):
        a, b = nde.solve(f, (y, y), steps=6, solver=solver, gradient=gradient)
        return jnp.sum(a**2) + jnp.sum(b)

    def per_example(gradient):
        g = jax.vmap(lambda y: eqx.filter_grad(loss)(field, y, gradient))(ys)
        return g.operator.weight

    assert jnp.allclose(
        per_example("reversible"), per_example("discretize"), rtol=1e-11, atol=1e-14
    )

    def jac(gradient):
        def out(bias):
            f = eqx.tree_at(lambda f: f.bias, field, bias)
            return nde.solve(
                f, (ys[0], ys[1]), steps=6, solver=solver, gradient=gradient
            )[0]

        return jax.jacrev(out)(field.bias)

    assert jnp.allclose(jac("reversible"), jac("discretize"), rtol=1e-11, atol=1e-14)


def test_unstable_reconstruction_raises(getkey):
    # A small coupling makes the inverse divide by it at every step: in float32 the
    # rebuilt trajectory drifts away, and the gradient is refused, not returned wrong.
    field = nde.fields.Antisymmetric(2, dtype=jnp.float32, key=getkey())
    y0 = jnp.ones(2, jnp.float32)
    solver = nde.ReversibleRK("rk4", coupling=0.1)
    loss = lambda f: jnp.sum(  # noqa: E731
        nde.solve(f, y0, steps=100, solver=solver, gradient="reversible")
    )
    with pytest.raises(Exception, match="rebuilt the initial state"):
        jax.grad(loss)(field)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hamiltonian", "mlp"])
@pytest.mark.parametrize("gradient", ["reversible", "checkpoint", "discretize"])
def test_batched_solve_equals_vmap(getkey, name, gradient):
    # batched=True runs the custom VJP on the whole batch: same values and gradients
    # as an outer vmap, per-example gradients included.
    field, _, solver = _case(name, getkey())
    two = name == "hamiltonian"
    ys = jax.random.normal(getkey(), (4, 3))
    y0 = (ys, jnp.zeros_like(ys)) if two else ys

    def batched(f, y0):
        return nde.solve(
            f, y0, steps=10, solver=solver, gradient=gradient, batched=True
        )

    def vmapped(f, y0):
        return jax.vmap(
            lambda y: nde.solve(f, y, steps=10, solver=solver, gradient=gradient)
        )(y0)

    def loss(run):
        return lambda f: sum(jnp.sum(jnp.sin(o)) for o in jax.tree.leaves(run(f, y0)))

    for a, b in zip(
        jax.tree.leaves(batched(field, y0)), jax.tree.leaves(vmapped(field, y0))
    ):
        assert jnp.allclose(a, b, rtol=1e-13)
    ga = eqx.filter_grad(loss(batched))(field).operator.weight
    gb = eqx.filter_grad(loss(vmapped))(field).operator.weight
    assert jnp.allclose(ga, gb, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="leading batch axis"):
        nde.solve(
            field,
            (ys, ys[0]) if two else ys[0, 0],
            steps=2,
            solver=solver,
            batched=True,
        )
