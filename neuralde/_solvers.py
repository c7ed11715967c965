"""The solver names of `neuralde.solve`, and the two solvers diffrax lacks: classical
RK4 and leapfrog (Störmer–Verlet) for two-stream fields."""

from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import numpy as np
from equinox.internal import ω


_rk4_tableau = dfx.ButcherTableau(
    c=np.array([0.5, 0.5, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    # Classical RK4 has no embedded method; it is used with fixed steps only.
    b_error=np.zeros(4),
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
)


class RK4(dfx.AbstractERK):
    """The classical fourth-order Runge–Kutta method (Kutta 1901), for fixed steps.

    Uses third-order Hermite interpolation for dense/`ts` output.
    """

    tableau: ClassVar[dfx.ButcherTableau] = _rk4_tableau
    interpolation_cls: ClassVar[
        Callable[..., dfx.ThirdOrderHermitePolynomialInterpolation]
    ] = dfx.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


class Leapfrog(dfx.AbstractSolver):
    """Leapfrog (Störmer–Verlet, kick–drift–kick) for $\\dot y = f(t, z)$,
    $\\dot z = g(t, y)$:

    $z_{1/2} = z_0 + \\tfrac h2 g(t_0, y_0)$, $y_1 = y_0 + h f(t_{1/2}, z_{1/2})$,
    $z_1 = z_{1/2} + \\tfrac h2 g(t_1, y_1)$.

    Second order, symplectic and time-reversible. On $\\ddot y = F(y)$ (with $z$ the
    velocity) the positions obey $y_{n+1} = 2y_n - y_{n-1} + h^2 F(y_n)$. Takes the
    terms `(term_y, term_z)` like `diffrax.SemiImplicitEuler`.
    """

    term_structure: ClassVar = (dfx.AbstractTerm, dfx.AbstractTerm)
    interpolation_cls: ClassVar[Callable[..., dfx.LocalLinearInterpolation]] = (
        dfx.LocalLinearInterpolation
    )

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        term_y, term_z = terms
        y0_, z0 = y0
        tm = t0 + 0.5 * (t1 - t0)
        z_half = (z0**ω + term_z.vf_prod(t0, y0_, args, term_z.contr(t0, tm)) ** ω).ω
        y1_ = (y0_**ω + term_y.vf_prod(tm, z_half, args, term_y.contr(t0, t1)) ** ω).ω
        z1 = (z_half**ω + term_z.vf_prod(t1, y1_, args, term_z.contr(tm, t1)) ** ω).ω
        y1 = (y1_, z1)
        dense_info = dict(y0=y0, y1=y1)
        return y1, None, dense_info, None, dfx.RESULTS.successful

    def func(self, terms, t0, y0, args):
        term_y, term_z = terms
        y0_, z0 = y0
        return term_y.vf(t0, z0, args), term_z.vf(t0, y0_, args)


_SOLVERS: dict[str, Callable[[], dfx.AbstractSolver]] = {
    "euler": dfx.Euler,
    "midpoint": dfx.Midpoint,
    "heun": dfx.Heun,
    "rk4": RK4,
    "tsit5": dfx.Tsit5,
    "dopri5": dfx.Dopri5,
    "symplectic_euler": dfx.SemiImplicitEuler,
    "leapfrog": Leapfrog,
    "reversible_heun": dfx.ReversibleHeun,
}
SOLVER_NAMES = tuple(_SOLVERS)
# Solvers that neuralde runs with fixed steps, although diffrax could adapt some.
_FIXED_STEP = (
    dfx.Euler,
    dfx.Midpoint,
    dfx.Heun,
    RK4,
    dfx.SemiImplicitEuler,
    Leapfrog,
    dfx.ReversibleHeun,
)


def get_solver(solver: str | dfx.AbstractSolver) -> dfx.AbstractSolver:
    """A diffrax solver from a name of `SOLVER_NAMES`, or the solver itself."""
    if isinstance(solver, dfx.AbstractSolver):
        return solver
    if isinstance(solver, str):
        try:
            return _SOLVERS[solver]()
        except KeyError:
            pass
    raise ValueError(
        f"Unknown solver {solver!r}. Use one of {', '.join(SOLVER_NAMES)}, or a "
        "`diffrax.AbstractSolver` instance."
    )


def is_two_stream(solver: dfx.AbstractSolver) -> bool:
    """Whether the solver takes the two terms `(term_y, term_z)` of a two-stream
    field rather than one term."""
    return isinstance(solver.term_structure, tuple) and len(solver.term_structure) == 2


def is_adaptive(solver: dfx.AbstractSolver) -> bool:
    """Whether `solve` adapts the step size of `solver` when given no `steps`:
    `tsit5`, `dopri5` and other embedded diffrax methods outside the fixed-step
    names."""
    return isinstance(solver, dfx.AbstractAdaptiveSolver) and not isinstance(
        solver, _FIXED_STEP
    )


REVERSIBLE_NAMES = ("symplectic_euler", "leapfrog", "reversible_heun")


def is_reversible(solver: dfx.AbstractSolver) -> bool:
    """Whether each fixed step of `solver` can be undone exactly from its output."""
    return isinstance(solver, (dfx.SemiImplicitEuler, Leapfrog, dfx.ReversibleHeun))
