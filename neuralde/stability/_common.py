"""Shared machinery of the diagnostics: argument checks, flat views of PyTree states,
and fixed-step trajectories that can be observed and perturbed step by step."""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from .._solve import setup
from .._solvers import Reversible, take_step
from .._steps import all_finite, raise_if_nonfinite, scan_steps, StepGrid


def check_positive(value, name: str) -> None:
    """Trace-time check of a positive scalar; traced values pass."""
    if isinstance(value, jax.core.Tracer):
        return
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
    if not float(value) > 0:
        raise ValueError(f"`{name}` must be positive, got {value!r}.")


def flat_state(y: PyTree[Array]) -> tuple[Float[Array, " n"], Callable]:
    """The state as one flat floating-point vector, and the map back.

    Two-stream states `(y, z)` and any other PyTree become one vector, so that
    Jacobians and norms are those of the whole state.
    """
    leaves = jtu.tree_leaves(y)
    if not leaves:
        raise ValueError("The state has no arrays.")
    for x in leaves:
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(
                f"The state must be floating point, but it has a leaf of dtype "
                f"{jnp.result_type(x)}. Cast it, e.g. `y.astype(jnp.float32)`."
            )
    return ravel_pytree(y)


class FixedSteps(eqx.Module):
    """A validated fixed-step solve: its terms, solver, `t0`, `t1` and `StepGrid`."""

    terms: PyTree
    solver: dfx.AbstractSolver
    t0: Array
    t1: Array
    grid: StepGrid
    args: PyTree

    def __init__(
        self,
        field,
        y0,
        *,
        t0,
        t1,
        steps,
        dt0,
        solver,
        args,
        name: str,
        forward_mode: bool = False,
    ) -> None:
        terms, solver_obj, t0, t1, grid = setup(
            field,
            y0,
            t0=t0,
            t1=t1,
            steps=steps,
            dt0=dt0,
            solver=solver,
            gradient="discretize",
            checkpoints=None,
            ts=None,
            args=args,
        )
        if grid is None:
            raise ValueError(
                f"`{name}` differentiates the discrete network, a solve with fixed "
                f"steps: pass `steps=` or `dt0=` (got neither, with the adaptive "
                f"solver {solver!r})."
            )
        self.terms = terms
        self.solver = with_forward_mode(solver_obj) if forward_mode else solver_obj
        self.t0 = t0
        self.t1 = t1
        self.grid = grid
        self.args = args

    def flow(self, y0: PyTree[Array]) -> PyTree[Array]:
        """The flow map $y_0 \\mapsto y_n$ of the discrete network: the fixed-step
        loop of `neuralde.solve(..., gradient="discretize")` itself."""
        y1, _, bad = scan_steps(self.terms, self.solver, self.grid, y0, self.args)
        return raise_if_nonfinite(y1, bad, self.grid)

    def trajectory(
        self,
        y0: PyTree[Array],
        *,
        deltas: PyTree[Array] | None = None,
        observe: Callable[[Array, PyTree[Array]], PyTree[Array]] | None = None,
    ) -> tuple[PyTree[Array], Array, PyTree[Array] | None]:
        """The loop of `scan_steps` (the same steps, each checkpointed), that can
        also add `deltas[j]` (stacked on a leading axis of length `n + 1`) to the
        state after step `j` (`deltas[0]` to `y0`), and record `observe(t_j, y_j)`
        at every time of the grid.

        Returns the final state, the index of the first non-finite step (`n` if none
        was), and the observations stacked on a leading axis (or `None`).
        """
        grid, solver, terms, args = self.grid, self.solver, self.terms, self.args
        n = grid.n
        add = lambda y, d: jtu.tree_map(jnp.add, y, d)  # noqa: E731
        if deltas is not None:
            y0 = add(y0, jtu.tree_map(lambda d: d[0], deltas))
            xs = jtu.tree_map(lambda d: d[1:], deltas)
        else:
            xs = None
        state = solver.init(terms, grid(0), grid(1), y0, args)

        def step(carry, delta):
            y, state, bad, i = carry
            y, state = take_step(solver, terms, grid(i), grid(i + 1), y, args, state)
            if delta is not None:
                y = add(y, delta)
            bad = jnp.where((bad == n) & ~all_finite(y), i, bad)
            obs = None if observe is None else observe(grid(i + 1), y)
            return (y, state, bad, i + 1), obs

        # As in `scan_steps`: recompute each step in the backward pass.
        step = jax.checkpoint(step, prevent_cse=False)
        init = (y0, state, jnp.asarray(n), jnp.asarray(0))
        (y1, _, bad, _), obs = jax.lax.scan(step, init, xs, length=n)
        if observe is not None:
            first = observe(grid(0), y0)
            obs = jtu.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, obs)
        return y1, bad, obs


def with_forward_mode(solver: dfx.AbstractSolver) -> dfx.AbstractSolver:
    """The same solver, with steps that support forward-mode autodiff.

    The fixed-step loops write out the stages of explicit Butcher tableaus
    (`take_step`); other Runge–Kutta solvers take diffrax's own `step`, which runs
    the stages in a checkpointed while loop, a `custom_vjp` through which `jax.jvp`
    cannot pass. Its `"bounded"` loop does the same arithmetic in both modes.
    """
    if isinstance(solver, dfx.AbstractRungeKutta) and solver.scan_kind is None:
        return eqx.tree_at(
            lambda s: s.scan_kind, solver, "bounded", is_leaf=lambda x: x is None
        )
    if isinstance(solver, Reversible):
        return eqx.tree_at(lambda s: s.solver, solver, with_forward_mode(solver.solver))
    return solver
