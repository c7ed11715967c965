"""The reconstruction error of reversible solves."""

from collections.abc import Callable

import diffrax as dfx
from jaxtyping import Array, ArrayLike, Float, PyTree

from .. import _steps
from .._solve import setup
from ..gradients import Reversible
from ..gradients._reversible import reconstruct, relative_error


def reversibility_error(
    field: Callable[[ArrayLike, PyTree[Array], PyTree], PyTree[Array]],
    y0: PyTree[Array],
    *,
    solver: str | dfx.AbstractSolver,
    steps: int | None = None,
    dt0: float | None = None,
    t0: float = 0.0,
    t1: float | None = None,
    args: PyTree = None,
) -> Float[Array, ""]:
    """How far the initial state rebuilt by running a reversible solve backwards is
    from the true one.

    `gradient="reversible"` rebuilds every state of the forward pass this way, so
    this is the error of the states its gradient is evaluated at. In exact arithmetic
    it is zero; in floating point it grows with the number of steps and with the
    instability of the backward dynamics (a reversible step of a contracting field
    expands when inverted).

    **Arguments:** as for [`neuralde.solve`][] with `gradient="reversible"`: a
    reversible `solver` and fixed `steps` or `dt0`.

    **Returns:** the relative error
    $\\|\\hat y_0 - y_0\\|_\\infty / \\|y_0\\|_\\infty$ of the rebuilt
    $\\hat y_0$ (over every leaf of the state).
    """
    problem = setup(
        field,
        y0,
        t0=t0,
        t1=t1,
        steps=steps,
        dt0=dt0,
        solver=solver,
        gradient=Reversible(),
        ts=None,
        args=args,
        batched=False,
    )
    terms, solver, grid = problem.terms, problem.solver, problem.grid
    y1, state1, _ = _steps.scan_steps(terms, solver, grid, y0, args)
    y1 = _steps.checked(y1, terms, solver, grid, y0, args)
    return relative_error(reconstruct(solver, terms, grid, y1, state1, args), y0)
