import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._nonfinite import all_finite, raise_if, TimeMessages
from ._base import AbstractGradient, Integration


def diffeqsolve(
    problem: Integration, y0: PyTree[Array], adjoint: dfx.AbstractAdjoint
) -> PyTree[Array]:
    """`problem` through `diffrax.diffeqsolve` with `adjoint`: the path of adaptive
    solves and of `ts=`. Fixed steps step to the grid's times."""
    grid = problem.grid
    if grid is None:
        controller = dfx.PIDController(rtol=problem.rtol, atol=problem.atol)
        dt0, n = problem.dt0, problem.max_steps
    else:
        controller = dfx.StepTo(ts=grid.times())
        dt0, n = None, grid.n
    if problem.ts is None:
        saveat = dfx.SaveAt(t1=True)
        saved = problem.t1[None]
    else:
        saved = jnp.asarray(problem.ts, jnp.result_type(problem.t0))
        saveat = dfx.SaveAt(ts=saved)
    terms = jtu.tree_map(
        lambda term: (
            dfx.ODETerm(_FiniteInput(term.vector_field))
            if isinstance(term, dfx.ODETerm)
            else term
        ),
        problem.terms,
        # The drift and the noise of an SDE's MultiTerm are wrapped one by one.
        is_leaf=lambda x: isinstance(x, dfx.ODETerm | dfx.ControlTerm),
    )
    sol = dfx.diffeqsolve(
        terms,
        problem.solver,
        problem.t0,
        problem.t1,
        dt0,
        y0,
        problem.args,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=n,
    )
    y = sol.ys if problem.ts is not None else jtu.tree_map(lambda x: x[-1], sol.ys)
    # A state that became non-finite in the last step is seen by no evaluation.
    ok = jax.vmap(all_finite)(sol.ys)
    first = jnp.argmin(ok)
    msgs = TimeMessages("by t =")
    return raise_if(y, ~jnp.all(ok), msgs.index(~jnp.all(ok), saved[first]), msgs)


class _FiniteInput(eqx.Module):
    """A vector field that raises when evaluated at a non-finite state, naming the
    time of the evaluation."""

    vector_field: eqx.Module

    def __call__(self, t, y, args):
        bad = ~all_finite(y)
        msgs = TimeMessages()
        y = eqx.branched_error_if(y, bad, msgs.index(bad, t), msgs)
        return self.vector_field(t, y, args)


class Diffrax(AbstractGradient):
    """Any diffrax adjoint as a gradient mode: the solve runs through
    `diffrax.diffeqsolve(..., adjoint=adjoint)`.

    `neuralde.solve(..., gradient=adjoint)` wraps a `diffrax.AbstractAdjoint` in
    this. A `diffrax.BacksolveAdjoint` on fixed steps solves its backward pass on
    the same steps, reversed, unless its own `stepsize_controller` says otherwise.
    """

    adjoint: dfx.AbstractAdjoint

    def check(self, solver, *, adaptive, ts):
        if isinstance(self.adjoint, dfx.BacksolveAdjoint):
            _check_one_term(solver, "diffrax.BacksolveAdjoint")

    def solve(self, problem, y0):
        adjoint = self.adjoint
        if isinstance(adjoint, dfx.BacksolveAdjoint) and problem.grid is not None:
            adjoint = backsolve_on(problem, adjoint.kwargs)
        return diffeqsolve(problem, y0, adjoint)


def backsolve_on(problem: Integration, kwargs: dict) -> dfx.BacksolveAdjoint:
    """`BacksolveAdjoint` whose backward solve takes the forward steps reversed: the
    adjoint of the same discretisation. With `ts`, diffrax solves backwards between
    each pair of saved times, so it takes steps of the grid's size instead."""
    kwargs = dict(kwargs)
    grid = problem.grid
    if problem.ts is None:
        kwargs.setdefault("stepsize_controller", dfx.StepTo(ts=grid.times()[::-1]))
    elif "stepsize_controller" not in kwargs:
        kwargs.update(
            stepsize_controller=dfx.ConstantStepSize(),
            dt0=-(grid(1) - grid(0)),
        )
    return dfx.BacksolveAdjoint(**kwargs)


def _check_one_term(solver, what: str) -> None:
    if isinstance(solver.term_structure, tuple):
        raise ValueError(
            f"{what} integrates the adjoint backwards with a one-term solver, not "
            f"{type(solver).__name__}, which acts on two streams. Use "
            '`gradient="discretize"`, `"checkpoint"` or `"reversible"` with this '
            "solver, or a one-term solver such as 'rk4' with the adjoint."
        )
