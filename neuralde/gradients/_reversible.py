"""Exact gradients of reversible fixed-step solves in O(1) memory.

The forward pass keeps only the final state. The backward pass rebuilds each earlier
state by inverting one step at a time, and takes one VJP per step at the rebuilt
state: the gradient of the discrete network (the one `"discretize"` gives, up to the
round-off of the reconstruction) with memory that does not grow with the number of
steps (Chang et al. 2018; Kidger et al. 2021; McCallum & Foster 2024).
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from equinox.internal import ω
from jaxtyping import Array, PyTree

from .. import _steps
from .._nonfinite import raise_if
from .._solvers import (
    is_reversible,
    Leapfrog,
    REVERSIBLE_NAMES,
    ReversibleRK,
    take_step,
)
from ._base import AbstractGradient, dense_cotangent


class Reversible(AbstractGradient):
    """The gradient of `Discretize`, in memory that does not grow with the number of
    steps: the forward pass keeps only the final state, and the backward pass
    rebuilds each earlier state by inverting the steps of a reversible solver
    (`symplectic_euler`, `leapfrog`, `reversible_heun`, or
    `neuralde.ReversibleRK` around a Runge–Kutta solver), taking one VJP per step.

    Fixed steps only, and the final state only (no `ts=`). It is a custom VJP, so
    under `jax.vmap` its backward pass runs per example: pass the batch to `solve`
    instead (see `neuralde.solve`'s `batched`). The rebuilt initial state is
    checked: if running the steps backwards amplified round-off beyond
    $\\sqrt{\\epsilon}$, the gradient raises rather than return a wrong value.
    Gradients with respect to `t0` and `t1` are refused.
    """

    def check(self, solver, *, adaptive, ts):
        if adaptive or not is_reversible(solver):
            raise ValueError(
                '`gradient="reversible"` needs fixed steps of a reversible solver: '
                f"one of {', '.join(REVERSIBLE_NAMES)}, with `steps=` or `dt0=`; got "
                f"{type(solver).__name__}{' (adaptive)' if adaptive else ''}."
            )
        if ts:
            raise ValueError(
                '`gradient="reversible"` returns the final state only, as it stores '
                "no trajectory; solve up to each time of `ts` separately, or use "
                '`gradient="checkpoint"` with `ts=`.'
            )

    def solve(self, problem, y0):
        terms, solver, grid, args = (
            problem.terms,
            problem.solver,
            problem.grid,
            problem.args,
        )
        y1 = reversible_loop((y0, terms, args, grid), solver)
        return _steps.checked(y1, terms, solver, grid, y0, args)


def inverse_step(solver, terms, t0, t1, y1, state1, args):
    """Undo one step of a reversible solver: `(y0, state0)` from `(y1, state1)`."""
    if isinstance(solver, dfx.SemiImplicitEuler | Leapfrog):
        y, z = y1
        for index, t, ta, tb in two_stream_updates(solver, t0, t1):
            term = terms[index]
            if index == 1:  # z -= h g(t, y)
                z = (z**ω - term.vf_prod(t, y, args, term.contr(ta, tb)) ** ω).ω
            else:  # y -= h f(t, z)
                y = (y**ω - term.vf_prod(t, z, args, term.contr(ta, tb)) ** ω).ω
        return (y, z), state1
    if isinstance(solver, dfx.ReversibleHeun):
        # Kidger et al. (2021), with the state (yhat, f(t, yhat)) that diffrax keeps.
        yhat1, vf1 = state1
        control = terms.contr(t0, t1)
        yhat0 = (2 * y1**ω - yhat1**ω - terms.prod(vf1, control) ** ω).ω
        vf0 = terms.vf(t0, yhat0, args)
        y0 = (y1**ω - 0.5 * terms.prod((vf0**ω + vf1**ω).ω, control) ** ω).ω
        return y0, (yhat0, vf0)
    if isinstance(solver, ReversibleRK):
        return solver.inverse_step(terms, t0, t1, y1, state1, args)
    raise ValueError(f"{type(solver).__name__} is not a reversible solver.")


def two_stream_updates(solver, t0, t1):
    """The updates of one symplectic Euler or leapfrog step, last first, as
    `(stream, time, control start, control end)`: stream 0 is `y += f(t, z) dt`,
    stream 1 is `z += g(t, y) dt`. Undoing them in this order inverts the step."""
    if isinstance(solver, dfx.SemiImplicitEuler):
        # forward: y1 = y0 + h f(t0, z0); z1 = z0 + h g(t0, y1)
        return [(1, t0, t0, t1), (0, t0, t0, t1)]
    # forward: z' = z0 + h/2 g(t0, y0); y1 = y0 + h f(tm, z'); z1 = z' + h/2 g(t1, y1)
    tm = t0 + 0.5 * (t1 - t0)
    return [(1, t1, tm, t1), (0, tm, t0, t1), (1, t0, t0, tm)]


def reconstruct(solver, terms, grid, y1, state1, args) -> PyTree[Array]:
    """Run the steps of `grid` backwards from `(y1, state1)`: the rebuilt `y0`."""

    def step(carry, _):
        y, state, i = carry
        y, state = inverse_step(solver, terms, grid(i), grid(i + 1), y, state, args)
        return (y, state, i - 1), None

    init = (y1, state1, jnp.asarray(grid.n - 1))
    (y0, _, _), _ = jax.lax.scan(step, init, length=grid.n)
    return y0


@eqx.filter_custom_vjp
def reversible_loop(vjp_arg, solver):
    """The final state of a fixed-step solve, with a reverse pass that rebuilds the
    trajectory instead of storing it. `vjp_arg = (y0, terms, args, grid)`."""
    y0, terms, args, grid = vjp_arg
    y1, _, _ = _steps.scan_steps(terms, solver, grid, y0, args)
    return y1


@reversible_loop.def_fwd
def _fwd(perturbed, vjp_arg, solver):
    del perturbed
    y0, terms, args, grid = vjp_arg
    y1, state1, _ = _steps.scan_steps(terms, solver, grid, y0, args)
    return y1, (y1, state1)


@reversible_loop.def_bwd
def _bwd(residuals, ct_y1, perturbed, vjp_arg, solver):
    _, _, _, perturbed_grid = perturbed
    if perturbed_grid.t0 or perturbed_grid.t1:
        raise ValueError(
            '`gradient="reversible"` does not differentiate with respect to `t0` '
            'or `t1`. Use gradient="discretize" or "checkpoint" (the same '
            'gradient), or "adjoint" (that of the continuous flow).'
        )
    y1, state1 = residuals
    y0, terms, args, grid = vjp_arg
    params, static = eqx.partition((terms, args), eqx.is_inexact_array)
    ct_y1 = dense_cotangent(ct_y1, y1)

    def step(carry, _):
        y, state, ct_y, ct_state, ct_params, i = carry
        y, state, ct_y, ct_state, ct_p = step_back(
            solver, params, static, grid(i), grid(i + 1), y, state, ct_y, ct_state
        )
        ct_params = (ct_params**ω + ct_p**ω).ω
        return (y, state, ct_y, ct_state, ct_params, i - 1), None

    zeros = lambda tree: jtu.tree_map(jnp.zeros_like, tree)  # noqa: E731
    init = (y1, state1, ct_y1, zeros(state1), zeros(params), grid.n - 1)
    (y0_rebuilt, _, ct_y0, ct_state0, ct_params, _), _ = jax.lax.scan(
        step, init, length=grid.n
    )

    # The solver's initial state is a function of y0 and the parameters too
    # (reversible Heun stores f(t0, y0); the McCallum-Foster wrapper starts from
    # z0 = y0).
    def init_state(y, params):
        terms, args = eqx.combine(params, static)
        return solver.init(terms, grid(0), grid(1), y, args)

    _, vjp_init = jax.vjp(init_state, y0, params)
    ct_y0_init, ct_params_init = vjp_init(ct_state0)
    ct_y0 = (ct_y0**ω + ct_y0_init**ω).ω
    ct_terms, ct_args = (ct_params**ω + ct_params_init**ω).ω
    # The gradient was taken along the rebuilt trajectory: refuse it if that drifted
    # from the true one (reversed dynamics that amplify round-off).
    error = relative_error(y0_rebuilt, y0)
    tol = jnp.sqrt(jnp.finfo(error.dtype).eps)
    ct_y0, ct_terms, ct_args = raise_if(
        (ct_y0, ct_terms, ct_args),
        ~(error <= tol),
        0,
        [
            'neuralde: gradient="reversible" rebuilt the initial state with a relative '
            "error above sqrt(eps): running the steps backwards amplifies round-off "
            "here (a strongly contracting field, or a small `coupling`), so the "
            'gradient would be wrong. Use gradient="discretize" or "checkpoint"; '
            "`neuralde.stability.reversibility_error` measures the drift."
        ],
    )
    return ct_y0, ct_terms, ct_args, jtu.tree_map(lambda _: None, grid)


def relative_error(rebuilt: PyTree[Array], y0: PyTree[Array]) -> Array:
    """$\\|\\hat y_0 - y_0\\|_\\infty / \\|y_0\\|_\\infty$ over every leaf."""
    pairs = zip(jtu.tree_leaves(rebuilt), jtu.tree_leaves(y0))
    err = jnp.max(jnp.stack([jnp.max(jnp.abs(a - b)) for a, b in pairs]))
    size = jnp.max(jnp.stack([jnp.max(jnp.abs(b)) for b in jtu.tree_leaves(y0)]))
    return err / jnp.maximum(size, jnp.finfo(size.dtype).tiny)


def step_back(solver, params, static, t0, t1, y1, state1, ct_y1, ct_state1):
    """One step of the reverse pass: the state before the step, rebuilt, and the
    cotangents of that state and of the parameters, `params` being the inexact arrays
    of `(terms, args)`."""
    if isinstance(solver, dfx.SemiImplicitEuler | Leapfrog):
        y0, ct_y0, ct_params = _step_back_two_stream(
            solver, params, static, t0, t1, y1, ct_y1
        )
        return y0, state1, ct_y0, ct_state1, ct_params
    terms, args = eqx.combine(params, static)

    def inverse(y, state):
        return inverse_step(solver, terms, t0, t1, y, state, args)

    def forward(y, state, params):
        terms, args = eqx.combine(params, static)
        return take_step(solver, terms, t0, t1, y, args, state)

    y0, state0 = inverse(y1, state1)
    _, vjp = jax.vjp(forward, y0, state0, params)
    ct_y0, ct_state0, ct_params = vjp((ct_y1, ct_state1))
    return y0, state0, ct_y0, ct_state0, ct_params


def _step_back_two_stream(solver, params, static, t0, t1, y1, ct_y1):
    """Symplectic Euler and leapfrog, inverted update by update. Each update of the
    inverse evaluates one stream's rate at the very point the forward step evaluated
    it, so its VJP comes with it: no rate is evaluated twice."""

    def update(index, t, x, ta, tb):
        # The increment of stream `index` (0: y, from z; 1: z, from y) and its VJP.
        def fn(x, params):
            terms, args = eqx.combine(params, static)
            term = terms[index]
            return term.vf_prod(t, x, args, term.contr(ta, tb))

        return jax.vjp(fn, x, params)

    (y, z), (ct_y, ct_z) = y1, ct_y1
    ct_params = []

    def undo(index, t, ta, tb):
        # Undo one update of stream `index`, and pull its cotangent back.
        nonlocal y, z, ct_y, ct_z
        if index == 1:  # z -= h g(t, y)
            dz, vjp = update(1, t, y, ta, tb)
            z = (z**ω - dz**ω).ω
            extra, ct_p = vjp(ct_z)
            ct_y = (ct_y**ω + extra**ω).ω
        else:  # y -= h f(t, z)
            dy, vjp = update(0, t, z, ta, tb)
            y = (y**ω - dy**ω).ω
            extra, ct_p = vjp(ct_y)
            ct_z = (ct_z**ω + extra**ω).ω
        ct_params.append(ct_p)

    for index, t, ta, tb in two_stream_updates(solver, t0, t1):
        undo(index, t, ta, tb)
    total = jtu.tree_map(lambda *c: sum(c), *ct_params)
    return (y, z), (ct_y, ct_z), total
