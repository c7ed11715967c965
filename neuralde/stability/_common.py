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

from .. import _steps
from .._solve import setup
from .._solvers import ReversibleRK
from .._steps import StepGrid
from ..gradients import Discretize


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
    """A validated fixed-step solve: its terms, solver, `t0`, `t1` and `StepGrid`,
    run on the fixed-step loop of `neuralde.solve`; with `diffusion` and `key`, an
    SDE on the Brownian path of `key`."""

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
        diffusion=None,
        key=None,
    ) -> None:
        if steps is None and dt0 is None:
            raise ValueError(
                f"`{name}` differentiates the discrete network, a solve with fixed "
                f"steps: pass `steps=` or `dt0=` (got neither, with the solver "
                f"{solver!r})."
            )
        problem = setup(
            field,
            y0,
            t0=t0,
            t1=t1,
            steps=steps,
            dt0=dt0,
            solver=solver,
            gradient=Discretize(),
            ts=None,
            args=args,
            batched=False,
            diffusion=diffusion,
            key=key,
        )
        self.terms = problem.terms
        self.solver = (
            with_forward_mode(problem.solver) if forward_mode else problem.solver
        )
        self.t0 = problem.t0
        self.t1 = problem.t1
        self.grid = problem.grid
        self.args = args

    def flow(self, y0: PyTree[Array]) -> PyTree[Array]:
        """The flow map $y_0 \\mapsto y_n$ of the discrete network: the fixed-step
        loop of `neuralde.solve(..., gradient="discretize")` itself."""
        return _steps.run(self.terms, self.solver, self.grid, y0, self.args)

    def trajectory(
        self,
        y0: PyTree[Array],
        *,
        deltas: PyTree[Array] | None = None,
        observe: Callable[[Array, PyTree[Array]], PyTree[Array]] | None = None,
    ) -> tuple[PyTree[Array], PyTree[Array] | None]:
        """The loop of `flow`, that can also add `deltas[j]` (stacked on a leading
        axis of length `n + 1`) to the state after step `j` (`deltas[0]` to `y0`),
        and record `observe(t_j, y_j)` at every time of the grid.

        Returns the final state, checked for non-finite values, and the
        observations stacked on a leading axis (or `None`).
        """
        grid, solver, terms, args = self.grid, self.solver, self.terms, self.args
        if deltas is not None:
            y0 = jtu.tree_map(lambda y, d: y + d[0], y0, deltas)
            deltas = jtu.tree_map(lambda d: d[1:], deltas)
        y1, _, obs = _steps.scan_steps(
            terms, solver, grid, y0, args, deltas=deltas, observe=observe
        )
        if observe is not None:
            first = observe(grid(0), y0)
            obs = jtu.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, obs)
        y1 = _steps.checked(y1, terms, solver, grid, y0, args, deltas=deltas)
        return y1, obs


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
    if isinstance(solver, ReversibleRK):
        return eqx.tree_at(lambda s: s.solver, solver, with_forward_mode(solver.solver))
    return solver
