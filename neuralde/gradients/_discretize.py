import diffrax as dfx

from .. import _steps
from ._base import AbstractGradient
from ._diffrax import diffeqsolve


class Discretize(AbstractGradient):
    """Backpropagation through the solver's steps (discretize-then-optimise): the
    exact gradient of the discrete network.

    Fixed steps run in neuralde's loop, a `lax.scan` over the diffrax solver's
    `step`, in which each step is recomputed in the backward pass: one stored state
    per step. It has no custom VJP, so it is as fast under `jax.vmap` as batched,
    and forward mode (`jax.jvp`, `jax.jacfwd`) passes through it. Adaptive solves
    and `ts=` run through `diffrax.RecursiveCheckpointAdjoint`.
    """

    def solve(self, problem, y0):
        grid = problem.grid
        if grid is not None and problem.ts is None:
            return _steps.run(problem.terms, problem.solver, grid, y0, problem.args)
        checkpoints = None if grid is None else grid.n
        return diffeqsolve(problem, y0, dfx.RecursiveCheckpointAdjoint(checkpoints))
