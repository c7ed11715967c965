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

from ._solvers import Leapfrog, Reversible
from ._steps import raise_if_nonfinite, scan_steps


def inverse_step(solver, terms, t0, t1, y1, state1, args):
    """Undo one step of a reversible solver: `(y0, state0)` from `(y1, state1)`."""
    if isinstance(solver, dfx.SemiImplicitEuler):
        # y1 = y0 + h f(t0, z0);  z1 = z0 + h g(t0, y1)
        term_y, term_z = terms
        y1_, z1 = y1
        z0 = (z1**ω - term_z.vf_prod(t0, y1_, args, term_z.contr(t0, t1)) ** ω).ω
        y0_ = (y1_**ω - term_y.vf_prod(t0, z0, args, term_y.contr(t0, t1)) ** ω).ω
        return (y0_, z0), state1
    if isinstance(solver, Leapfrog):
        return solver.inverse_step(terms, t0, t1, y1, args), state1
    if isinstance(solver, dfx.ReversibleHeun):
        # Kidger et al. (2021), with the state (yhat, f(t, yhat)) that diffrax keeps.
        yhat1, vf1 = state1
        control = terms.contr(t0, t1)
        yhat0 = (2 * y1**ω - yhat1**ω - terms.prod(vf1, control) ** ω).ω
        vf0 = terms.vf(t0, yhat0, args)
        y0 = (y1**ω - 0.5 * terms.prod((vf0**ω + vf1**ω).ω, control) ** ω).ω
        return y0, (yhat0, vf0)
    if isinstance(solver, Reversible):
        return solver.inverse_step(terms, t0, t1, y1, state1, args)
    raise ValueError(f"{type(solver).__name__} is not a reversible solver.")


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
def reversible_loop(vjp_arg, solver, grid):
    """The final state of a fixed-step solve, with a reverse pass that rebuilds the
    trajectory instead of storing it. `vjp_arg = (y0, terms, args)`."""
    y0, terms, args = vjp_arg
    y1, _, bad = scan_steps(terms, solver, grid, y0, args)
    return raise_if_nonfinite(y1, bad, grid)


@reversible_loop.def_fwd
def _fwd(perturbed, vjp_arg, solver, grid):
    del perturbed
    y0, terms, args = vjp_arg
    y1, state1, bad = scan_steps(terms, solver, grid, y0, args)
    y1 = raise_if_nonfinite(y1, bad, grid)
    return y1, (y1, state1)


@reversible_loop.def_bwd
def _bwd(residuals, ct_y1, perturbed, vjp_arg, solver, grid):
    del perturbed
    y1, state1 = residuals
    y0, terms, args = vjp_arg
    params, static = eqx.partition((terms, args), eqx.is_inexact_array)

    def forward(y, state, params, t0, t1):
        terms, args = eqx.combine(params, static)
        y, _, _, state, _ = solver.step(terms, t0, t1, y, args, state, False)
        return y, state

    def backward_step(carry, _):
        y, state, ct_y, ct_state, ct_params, i = carry
        t = grid(i), grid(i + 1)
        terms, args = eqx.combine(params, static)
        y, state = inverse_step(solver, terms, t[0], t[1], y, state, args)
        _, vjp = jax.vjp(
            lambda y_, s_, p_: forward(y_, s_, p_, t[0], t[1]), y, state, params
        )
        ct_y, ct_state, ct_p = vjp((ct_y, ct_state))
        ct_params = (ct_params**ω + ct_p**ω).ω
        return (y, state, ct_y, ct_state, ct_params, i - 1), None

    ct_y1 = jtu.tree_map(
        lambda c, y: jnp.zeros_like(y) if c is None else c,
        ct_y1,
        y1,
        is_leaf=lambda c: c is None,
    )
    zeros = lambda tree: jtu.tree_map(jnp.zeros_like, tree)  # noqa: E731
    init = (y1, state1, ct_y1, zeros(state1), zeros(params), jnp.asarray(grid.n - 1))
    (_, _, ct_y0, ct_state0, ct_params, _), _ = jax.lax.scan(
        backward_step, init, length=grid.n
    )
    # The solver's initial state is a function of y0 and the parameters too (reversible
    # Heun stores f(t0, y0); the McCallum-Foster wrapper starts from z0 = y0).

    def init_state(y, params):
        terms, args = eqx.combine(params, static)
        return solver.init(terms, grid(0), grid(1), y, args)

    _, vjp_init = jax.vjp(init_state, y0, params)
    ct_y0_init, ct_params_init = vjp_init(ct_state0)
    ct_y0 = (ct_y0**ω + ct_y0_init**ω).ω
    ct_terms, ct_args = (ct_params**ω + ct_params_init**ω).ω
    return ct_y0, ct_terms, ct_args
