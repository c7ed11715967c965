"""Stochastic differential equations $dy = F(t, y)\\,dt + g(t, y)\\,dW$: the noise
term of a solve, its Brownian motion, and which calculus each solver converges to.

The Brownian motion is a `diffrax.VirtualBrownianTree` of the solve's interval,
resolved to a fixed fraction of it: one key gives one path, whatever the number of
steps, and every evaluation of an increment (the backward pass of a reversible or
adjoint gradient included) returns the same value.
"""

import operator
from collections.abc import Callable

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._vmapped import Vmapped


# The tree's resolution, as a fraction of the interval: 2^-16 resolves 65 536
# steps, at 16 halvings per increment.
RESOLUTION = 2.0**-16
CALCULI = {"ito": "Itô", "stratonovich": "Stratonovich"}


def calculus_of(solver: dfx.AbstractSolver) -> str | None:
    """The calculus whose solution `solver` converges to with noise: `"ito"`,
    `"stratonovich"`, `"additive"` (the additive-noise stochastic Runge–Kutta
    methods, for which the two coincide), or `None` for a solver of ODEs only."""
    if isinstance(solver, dfx.ShARK | dfx.SEA | dfx.SRA1):
        return "additive"
    if isinstance(solver, dfx.Euler | dfx.ItoMilstein):
        return "ito"
    stratonovich = (
        dfx.Heun,
        dfx.Midpoint,
        dfx.ReversibleHeun,
        dfx.EulerHeun,
        dfx.StratonovichMilstein,
        dfx.AbstractSRK,
    )
    if isinstance(solver, stratonovich):
        return "stratonovich"
    return None


def check_calculus(solver: dfx.AbstractSolver, calculus: str | None) -> None:
    """Refuse a solver of ODEs only, and one that converges to the other calculus
    than `calculus` (when given)."""
    name = type(solver).__name__
    found = calculus_of(solver)
    if found is None:
        raise ValueError(
            f"{name} is a solver of ODEs: with `diffusion=` use an SDE solver, "
            "'euler' (Euler–Maruyama, Itô), 'heun', 'midpoint' or 'reversible_heun' "
            "(Stratonovich), 'shark' or 'sea' (additive noise), or a diffrax SDE "
            "solver."
        )
    if calculus is None or found == "additive":
        return
    if calculus not in CALCULI:
        raise ValueError(
            f"`calculus` must be 'ito' or 'stratonovich' (or None: the solver's), got "
            f"{calculus!r}."
        )
    if found != calculus:
        instead = "'euler'" if calculus == "ito" else "'heun' or 'reversible_heun'"
        raise ValueError(
            f"{name} converges to the {CALCULI[found]} solution, not the "
            f"{CALCULI[calculus]} one asked for (`calculus={calculus!r}`). Use "
            f"{instead}, or 'shark'/'sea' for additive noise, where the two agree."
        )


class DiagonalNoise(dfx.ControlTerm):
    """$g(t, y) \\odot dW$: diagonal noise, one Brownian motion per component of
    the state, `g` returning a PyTree shaped like the state."""

    def prod(self, vf, control):
        return jtu.tree_map(operator.mul, vf, control)


def noise_term(
    diffusion: Callable,
    y0: PyTree[Array],
    t0,
    t1,
    args,
    solver: dfx.AbstractSolver,
    *,
    key: PRNGKeyArray,
    batched: bool,
    example: PyTree[Array],
) -> dfx.ControlTerm:
    """The noise term of a solve, with its Brownian motion.

    `diffusion(t, y, args)` returns either a PyTree shaped like the state (diagonal
    noise) or a `lineax.AbstractLinearOperator` whose input structure is that of the
    Brownian motion (general noise). `example` is one example's state.
    """
    if not callable(diffusion):
        raise TypeError(
            f"`diffusion` must be a callable `diffusion(t, y, args)`, got "
            f"{type(diffusion).__name__}."
        )
    out = jax.eval_shape(diffusion, t0, example, args)
    if isinstance(out, lx.AbstractLinearOperator):
        if batched:
            raise ValueError(
                "General noise (a diffusion that returns a lineax operator) acts on "
                "one example: batch it with `jax.vmap` rather than `batched=True`."
            )
        if out.out_structure() != jax.eval_shape(lambda: y0):
            raise ValueError(
                f"The diffusion's operator maps to {out.out_structure()}, not to the "
                f"state's structure {jax.eval_shape(lambda: y0)}."
            )
        shape, term = out.in_structure(), dfx.ControlTerm
    else:
        _check_diagonal(out, example)
        shape, term = jax.eval_shape(lambda: y0), DiagonalNoise
        if batched:
            diffusion = Vmapped(diffusion)
    lo, hi = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
    brownian = dfx.VirtualBrownianTree(
        lo,
        hi,
        tol=RESOLUTION * (hi - lo),
        shape=shape,
        key=key,
        levy_area=_levy_area(solver),
    )
    return term(diffusion, brownian)


def _levy_area(solver):
    minimal = getattr(solver, "minimal_levy_area", dfx.BrownianIncrement)
    if issubclass(minimal, dfx.AbstractSpaceTimeTimeLevyArea):
        return dfx.SpaceTimeTimeLevyArea
    if issubclass(minimal, dfx.AbstractSpaceTimeLevyArea):
        return dfx.SpaceTimeLevyArea
    return dfx.BrownianIncrement


def _check_diagonal(out, example) -> None:
    s_out, s_in = jtu.tree_structure(out), jtu.tree_structure(example)
    if s_out != s_in:
        raise ValueError(
            f"The diffusion returned a PyTree of structure {s_out} for a state of "
            f"structure {s_in}. Diagonal noise is shaped like the state; for other "
            "noise return a `lineax.AbstractLinearOperator` from the Brownian "
            "motion's shape to the state's."
        )
    for o, x in zip(jtu.tree_leaves(out), jtu.tree_leaves(example)):
        if o.shape != jnp.shape(x):
            raise ValueError(
                f"The diffusion returned shape {o.shape} for a state of shape "
                f"{jnp.shape(x)}. Diagonal noise is shaped like the state; for other "
                "noise return a `lineax.AbstractLinearOperator` (e.g. "
                "`lineax.MatrixLinearOperator(G)` with G of shape (state, noise))."
            )
        if o.dtype != jnp.result_type(x):
            raise TypeError(
                f"The diffusion returned dtype {o.dtype} for a state of dtype "
                f"{jnp.result_type(x)}."
            )
