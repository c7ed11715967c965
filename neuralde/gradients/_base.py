import abc

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._steps import StepGrid


class Integration(eqx.Module):
    """A validated solve, as `neuralde.solve` hands it to a gradient mode.

    - `terms`: the diffrax terms: one `ODETerm`, two for two-stream solvers, or an
        SDE's `MultiTerm` of the drift's `ODETerm` and the noise's `ControlTerm`.
    - `solver`: the diffrax solver.
    - `t0`, `t1`: the interval, in the state's dtype ($t_1 < t_0$ runs backwards).
    - `grid`: the `StepGrid` of a fixed-step solve; `None` for adaptive steps.
    - `ts`: the times to save at, or `None` for the state at `t1` only.
    - `args`: passed to the terms.
    - `dt0`, `rtol`, `atol`, `max_steps`: the adaptive step-size controller's
        options (`dt0=None`: diffrax picks the first step).
    """

    terms: PyTree
    solver: dfx.AbstractSolver
    t0: Array
    t1: Array
    grid: StepGrid | None
    ts: Array | None
    args: PyTree
    dt0: float | None = None
    rtol: float = eqx.field(static=True, default=1e-5)
    atol: float = eqx.field(static=True, default=1e-6)
    max_steps: int = eqx.field(static=True, default=4096)


class AbstractGradient(eqx.Module):
    """How `neuralde.solve` takes reverse-mode derivatives: a gradient mode.

    A mode knows which solves it can differentiate (`check`) and runs them
    (`solve`); `neuralde.solve` validates its arguments, builds the
    [`neuralde.gradients.Integration`][], and hands it over. To add a mode,
    subclass this, implement both methods, and pass an instance as
    `solve(..., gradient=MyMode())`.
    """

    def check(self, solver: dfx.AbstractSolver, *, adaptive: bool, ts: bool) -> None:
        """Raise a `ValueError` that says why, and what to use instead, if this mode
        cannot differentiate a solve with this `solver`, with adaptive or fixed
        steps, saving at `ts` or not. Called before anything is traced.

        The default accepts everything.
        """

    @abc.abstractmethod
    def solve(self, problem: Integration, y0: PyTree[Array]) -> PyTree[Array]:
        """**Arguments:**

        - `problem`: the solve, validated by `check`.
        - `y0`: the initial state.

        **Returns:** the state at `problem.t1`, or with `problem.ts` the states at
        those times stacked on a leading axis. A state that becomes non-finite
        raises an error naming the time.
        """


def dense_cotangent(ct: PyTree, like: PyTree[Array]) -> PyTree[Array]:
    """The output cotangent of a custom VJP with zeros for the leaves that are not
    differentiated (`None`), for a backward pass that carries it through a scan."""
    return jtu.tree_map(
        lambda c, y: jnp.zeros_like(y) if c is None else c,
        ct,
        like,
        is_leaf=lambda c: c is None,
    )
