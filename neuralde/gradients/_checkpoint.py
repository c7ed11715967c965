import math

import diffrax as dfx
import equinox as eqx

from .. import _steps
from .._checks import positive_int
from ._base import AbstractGradient
from ._diffrax import diffeqsolve


class Checkpoint(AbstractGradient):
    """The gradient of `Discretize`, in less memory: checkpointing.

    Fixed steps run in nested segments, each recomputed in the backward pass
    (`jax.checkpoint` around a `lax.scan`), with no custom VJP: it is as fast under
    `jax.vmap` as batched, and forward mode passes through it. With two levels (the
    default) the backward pass stores $\\lceil\\sqrt n\\rceil$ states at segment
    boundaries and the states of one segment at a time: $O(\\sqrt n)$ memory,
    for one forward pass more than `Discretize` (which stores all $n$ states).
    `levels=3` stores $O(n^{1/3})$ states per level, for very long solves, for a
    further forward pass.

    Adaptive solves and `ts=` use `diffrax.RecursiveCheckpointAdjoint`: binomial
    checkpointing (online, for adaptive steps).
    """

    checkpoints: int | None = eqx.field(static=True, default=None)
    levels: int = eqx.field(static=True, default=2)

    def __check_init__(self):
        if self.checkpoints is not None:
            positive_int(self.checkpoints, "checkpoints")
        if positive_int(self.levels, "levels") < 2:
            raise ValueError(
                f"`levels` counts nested levels of checkpoints and must be at least "
                f"2, got {self.levels!r}; `Discretize` stores one state per step."
            )

    def solve(self, problem, y0):
        grid = problem.grid
        if grid is not None and problem.ts is None:
            segments = _steps.segment_sizes(grid.n, self.levels, self.checkpoints)
            return _steps.run(
                problem.terms,
                problem.solver,
                grid,
                y0,
                problem.args,
                segments=segments,
            )
        checkpoints = self.checkpoints
        if checkpoints is None and grid is not None:
            checkpoints = math.ceil(math.sqrt(grid.n))
        return diffeqsolve(problem, y0, dfx.RecursiveCheckpointAdjoint(checkpoints))
