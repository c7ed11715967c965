"""One point of the benchmark grid: the checks that skip impossible combinations, the
library's forward and gradient, and the hand-written `lax.scan` reference of the
same steps."""

import functools
from typing import NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._solve import solve
from .._solvers import get_solver, has_error_estimate, is_two_stream
from ..gradients import as_gradient
from ._registry import ADAPTIVE, FIELDS


class Problem(NamedTuple):
    """What the rows of one comparison share: everything but the gradient mode."""

    field: str
    solver: str
    steps: int | str  # a number of equal steps, or "adaptive"
    batch: int
    width: int
    dtype: str

    @property
    def adaptive(self) -> bool:
        return self.steps == ADAPTIVE


class Point(NamedTuple):
    """One point of the grid: a problem, a gradient mode, and how the batch is
    passed: `"vmap"` (`jax.vmap` over `solve` of one example) or `"batched"` (the
    batch passed to `solve`)."""

    problem: Problem
    gradient: str
    batching: str = "batched"

    def as_dict(self) -> dict:
        return dict(
            self.problem._asdict(), gradient=self.gradient, batching=self.batching
        )


def skip_reason(point: Point, *, rtol: float) -> str | None:
    """Why `point` cannot run, in words, or `None`: the combinations that
    `neuralde.solve` refuses, asked of the solver and of the gradient mode itself
    without tracing (any other refusal is caught when the point is compiled), and
    adaptive solves asked for a relative tolerance finer than the state's
    precision, which would only run until `max_steps`."""
    p = point.problem
    solver = get_solver(p.solver)
    if p.adaptive and not has_error_estimate(solver):
        return f"{p.solver} has no error estimate: adaptive steps need tsit5 or dopri5"
    if is_two_stream(solver) and not FIELDS[p.field].two_stream:
        return (
            f"{p.solver} needs a two-stream field (y' = f(z), z' = g(y)); "
            f"{p.field} is not one"
        )
    try:
        as_gradient(point.gradient).check(solver, adaptive=p.adaptive, ts=False)
    except ValueError as e:
        return str(e)
    eps = float(jnp.finfo(p.dtype).eps)
    if p.adaptive and rtol < eps:
        return (
            f"rtol={rtol:g} is finer than the precision of {p.dtype} (eps {eps:.1e}): "
            "the step size controller cannot meet it"
        )
    return None


@functools.cache
def dtype_note(dtype: str) -> str | None:
    """Why the backend cannot run `dtype`, or `None`."""
    if dtype == "float64" and not jax.config.jax_enable_x64:
        return "float64 needs `jax.config.update('jax_enable_x64', True)`"
    try:
        x = jnp.ones((4, 4), dtype)
        jax.block_until_ready(jax.jit(lambda x: jnp.tanh(x @ x))(x))
    except Exception as e:  # the backend's refusal, whatever its type
        return f"the {jax.default_backend()} backend cannot run {dtype}: {e}"
    return None


def library_forward(point: Point, *, rtol: float, atol: float, max_steps: int):
    """`(field, y0_batch) -> y1_batch` through `neuralde.solve`."""
    p = point.problem
    kwargs = dict(solver=p.solver, gradient=point.gradient)
    if p.adaptive:
        kwargs.update(rtol=rtol, atol=atol, max_steps=max_steps)
    else:
        kwargs.update(steps=p.steps)
    if point.batching == "vmap":
        return lambda field, y0: jax.vmap(lambda y: solve(field, y, **kwargs))(y0)
    return lambda field, y0: solve(field, y0, batched=True, **kwargs)


def loss(y1) -> jax.Array:
    """The benchmark's loss: the mean square of the final state (of every stream),
    accumulated in float32 whatever the state's dtype."""
    return sum(jnp.mean(jnp.square(x.astype(jnp.float32))) for x in jtu.tree_leaves(y1))


def value_and_grad(forward):
    """`(field, y0) -> (loss, d loss / d field)`, differentiating the field's
    floating-point arrays."""

    def f(field, y0):
        return loss(forward(field, y0))

    return eqx.filter_value_and_grad(f)


# ---------------------------------------------------------------------------------
# The reference: the same steps written by hand as one `lax.scan` over the batch.


def _lin(y, *terms):
    """`y + sum_i c_i k_i` over PyTrees, for `terms = (c_1, k_1), ...`."""
    terms = [(c, k) for c, k in terms if not (isinstance(c, float) and c == 0)]
    return jtu.tree_map(
        lambda y, *ks: y + sum(c * k for (c, _), k in zip(terms, ks)),
        y,
        *(k for _, k in terms),
    )


def _euler(f, ta, tb, y, s):
    return _lin(y, (tb - ta, f(ta, y))), s


def _midpoint(f, ta, tb, y, s):
    h = tb - ta
    k1 = f(ta, y)
    return _lin(y, (h, f(ta + h / 2, _lin(y, (h / 2, k1))))), s


def _heun(f, ta, tb, y, s):
    h = tb - ta
    k1 = f(ta, y)
    k2 = f(tb, _lin(y, (h, k1)))
    return _lin(y, (h / 2, k1), (h / 2, k2)), s


def _rk4(f, ta, tb, y, s):
    h = tb - ta
    tm = ta + h / 2
    k1 = f(ta, y)
    k2 = f(tm, _lin(y, (h / 2, k1)))
    k3 = f(tm, _lin(y, (h / 2, k2)))
    k4 = f(tb, _lin(y, (h, k3)))
    return _lin(y, (h / 6, k1), (h / 3, k2), (h / 3, k3), (h / 6, k4)), s


def _tableau_step(tableau):
    """An explicit Runge-Kutta step from its Butcher tableau (tsit5, dopri5), taken
    with fixed steps: the error estimate is not formed."""

    def step(f, ta, tb, y, s):
        h = tb - ta
        ks = [f(ta, y)]
        for c, a in zip(tableau.c, tableau.a_lower):
            yi = _lin(y, *((float(ai) * h, k) for ai, k in zip(a, ks)))
            ks.append(f(ta + float(c) * h, yi))
        return _lin(y, *((float(b) * h, k) for b, k in zip(tableau.b_sol, ks))), s

    return step


def _symplectic_euler(fg, ta, tb, state, s):
    f, g = fg
    y, z = state
    h = tb - ta
    y1 = _lin(y, (h, f(ta, z)))
    return (y1, _lin(z, (h, g(ta, y1)))), s


def _leapfrog(fg, ta, tb, state, s):
    f, g = fg
    y, z = state
    h = tb - ta
    z_half = _lin(z, (h / 2, g(ta, y)))
    y1 = _lin(y, (h, f(ta + h / 2, z_half)))
    return (y1, _lin(z_half, (h / 2, g(tb, y1)))), s


def _reversible_heun(f, ta, tb, y, s):
    yhat, f0 = s
    h = tb - ta
    yhat1 = jtu.tree_map(lambda y, yh, k: 2 * y - yh + h * k, y, yhat, f0)
    f1 = f(tb, yhat1)
    return _lin(y, (h / 2, f0), (h / 2, f1)), (yhat1, f1)


REFERENCE_STEPS = {
    "euler": _euler,
    "midpoint": _midpoint,
    "heun": _heun,
    "rk4": _rk4,
    "tsit5": _tableau_step(dfx.Tsit5.tableau),
    "dopri5": _tableau_step(dfx.Dopri5.tableau),
    "symplectic_euler": _symplectic_euler,
    "leapfrog": _leapfrog,
    "reversible_heun": _reversible_heun,
}


def reference_forward(solver: str, steps: int, checkpoint: bool):
    """`(field, y0_batch) -> y1_batch`: `steps` equal steps of `solver` from 0 to the
    field's `t1`, as a `lax.scan` over the whole batch whose rates are the field
    vmapped over the examples. The step times are those of `neuralde.solve`,
    `t1 * (i / steps)` in the state's dtype; with `checkpoint`, each step is
    recomputed in the backward pass (`jax.checkpoint`)."""
    step = REFERENCE_STEPS[solver]

    def forward(field, y0):
        dtype = jnp.result_type(*jtu.tree_leaves(y0))
        t1 = jnp.asarray(field.t1, dtype)
        if is_two_stream(get_solver(solver)):
            rates = (_on_batch(field.dy), _on_batch(field.dz))
        else:
            rates = _on_batch(field)
        state = None
        if solver == "reversible_heun":
            state = (y0, rates(jnp.zeros((), dtype), y0))

        def body(carry, _):
            y, s, i = carry
            ta = t1 * (i.astype(dtype) / steps)
            tb = jnp.where(i + 1 >= steps, t1, t1 * ((i + 1).astype(dtype) / steps))
            y, s = step(rates, ta, tb, y, s)
            return (y, s, i + 1), None

        if checkpoint:
            body = jax.checkpoint(body, prevent_cse=False)
        (y1, _, _), _ = jax.lax.scan(body, (y0, state, jnp.asarray(0)), length=steps)
        return y1

    return forward


def _on_batch(rate):
    """`(t, y_batch) -> rate(t, y, None)` for every example of the batch."""
    batched = jax.vmap(rate, in_axes=(None, 0, None))
    return lambda t, y: batched(t, y, None)
