"""The solver names of `neuralde.solve`, and the solvers diffrax lacks: classical RK4,
leapfrog (Störmer–Verlet) for two-stream fields, and the reversible wrapper of
McCallum & Foster for any explicit Runge–Kutta method."""

from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax.tree_util as jtu
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
# Solvers of SDEs only: stochastic Runge–Kutta methods for additive noise.
_SDE_SOLVERS: dict[str, Callable[[], dfx.AbstractSolver]] = {
    "shark": dfx.ShARK,
    "sea": dfx.SEA,
}
SDE_SOLVER_NAMES = tuple(_SDE_SOLVERS)


def take_step(solver, terms, t0, t1, y0, args, state):
    """One step of `solver`, as `solve`'s fixed-step loops take it: `(y1, state1)`.

    Explicit Runge–Kutta tableaus run with their stages written out. diffrax's own
    `step` loops over the stages in a checkpointed `while_loop`, whose reverse mode
    under `jax.vmap` keeps one parameter cotangent per example: 60–110x slower than a
    hand-written RK4 scan at batch 256 (`experiments/bench_solve.py`). The result is
    the same method to round-off.
    """
    if isinstance(solver, dfx.AbstractERK) and isinstance(
        solver.tableau, dfx.ButcherTableau
    ):
        return _explicit_rk_step(solver.tableau, terms, t0, t1, y0, args), state
    y1, _, _, state, _ = solver.step(terms, t0, t1, y0, args, state, False)
    return y1, state


def _explicit_rk_step(tableau, terms, t0, t1, y0, args):
    control = terms.contr(t0, t1)
    ks = [terms.vf_prod(t0, y0, args, control)]
    for c, a in zip(tableau.c, tableau.a_lower):
        y = _combine(y0, a, ks)
        ks.append(terms.vf_prod(t0 + float(c) * (t1 - t0), y, args, control))
    return _combine(y0, tableau.b_sol, ks)


def _combine(y0, coeffs, ks):
    """`y0 + sum_i coeffs[i] ks[i]`, skipping zero coefficients."""
    pairs = [(float(a), k) for a, k in zip(coeffs, ks) if a != 0]
    return jtu.tree_map(
        lambda y, *k: y + sum(a * ki for (a, _), ki in zip(pairs, k)),
        y0,
        *(k for _, k in pairs),
    )


def get_solver(solver: str | dfx.AbstractSolver) -> dfx.AbstractSolver:
    """A diffrax solver from a name of `SOLVER_NAMES`, or the solver itself."""
    if isinstance(solver, dfx.AbstractSolver):
        return solver
    if isinstance(solver, str):
        make = _SOLVERS.get(solver) or _SDE_SOLVERS.get(solver)
        if make is not None:
            return make()
    raise ValueError(
        f"Unknown solver {solver!r}. Use one of {', '.join(SOLVER_NAMES)} (for SDEs "
        f"also {', '.join(SDE_SOLVER_NAMES)}), or a `diffrax.AbstractSolver` instance."
    )


def is_two_stream(solver: dfx.AbstractSolver) -> bool:
    """Whether the solver takes the two terms `(term_y, term_z)` of a two-stream
    field rather than one term."""
    return isinstance(solver.term_structure, tuple) and len(solver.term_structure) == 2


def has_error_estimate(solver: dfx.AbstractSolver) -> bool:
    """Whether `solver` can adapt its step size: a diffrax adaptive solver with an
    embedded error estimate (`heun`, `midpoint`, `tsit5`, `dopri5`,
    `reversible_heun`, implicit methods...). Classical RK4 has none."""
    return isinstance(solver, dfx.AbstractAdaptiveSolver) and not isinstance(
        solver, RK4
    )


class ReversibleRK(dfx.AbstractSolver):
    """Makes an explicit Runge–Kutta solver algebraically reversible
    (McCallum & Foster 2024).

    With $\\Psi_{s \\to t}$ one step of the wrapped solver from $s$ to $t$, the state
    $(y, z)$, $z_0 = y_0$, advances as

    $y_1 = \\lambda (y_0 - z_0) + \\Psi_{t_0 \\to t_1}(z_0)$,
    $\\quad z_1 = y_1 + z_0 - \\Psi_{t_1 \\to t_0}(y_1)$,

    and is undone exactly by $z_0 = z_1 - y_1 + \\Psi_{t_1 \\to t_0}(y_1)$,
    $y_0 = z_0 + (y_1 - \\Psi_{t_0 \\to t_1}(z_0)) / \\lambda$. The method keeps the
    order of the wrapped solver and costs two of its steps per step. `z` is the solver
    state; `solve` returns `y`.

    Stability: on $\\dot y = \\mu y$ the step has two roots whose product is
    $\\lambda$; one is close to the wrapped solver's $R(h\\mu)$, the other to
    $\\lambda / R(h\\mu)$. A mode that decays faster than $\\lambda$ per step
    ($|R(h\\mu)| < \\lambda$) is therefore amplified: with $\\lambda = 0.999$,
    `ReversibleRK("rk4")` on $\\dot y = -y$ with $h = 0.1$ grows by 1.104 per step.
    Use it on fields whose modes are oscillatory or weakly damped (antisymmetric,
    Hamiltonian); check with `neuralde.stability.step_stability`. A smaller
    $\\lambda$ widens the forward stability region, but the inverse divides by
    $\\lambda$ at every step, so the backward pass of `gradient="reversible"` rebuilds
    the trajectory less accurately; `solve` checks the rebuilt initial state and
    raises rather than return a wrong gradient.

    ```python
    nde.solve(field, y0, steps=100, solver=nde.ReversibleRK("rk4"),
              gradient="reversible")
    ```

    ??? cite "Reference"
        ```bibtex
        @article{mccallum2024efficient,
            title={Efficient, accurate and stable gradients for neural {ODE}s},
            author={McCallum, Sam and Foster, James},
            journal={arXiv:2410.11648},
            year={2024}
        }
        ```
    """

    solver: dfx.AbstractSolver
    coupling: float = eqx.field(static=True)

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., dfx.LocalLinearInterpolation]] = (
        dfx.LocalLinearInterpolation
    )

    def __init__(self, solver: str | dfx.AbstractSolver = "rk4", coupling=0.999):
        """**Arguments:**

        - `solver`: an explicit Runge–Kutta method: `"euler"`, `"midpoint"`,
            `"heun"`, `"rk4"`, `"tsit5"`, `"dopri5"`, or a `diffrax.AbstractERK`.
        - `coupling`: $\\lambda \\in (0, 1]$. Default `0.999`, as in the paper.
        """
        inner = get_solver(solver)
        if not isinstance(inner, dfx.Euler | dfx.AbstractERK):
            raise ValueError(
                "`ReversibleRK` wraps an explicit Runge-Kutta solver (euler, midpoint, "
                f"heun, rk4, tsit5, dopri5, or a diffrax.AbstractERK), got {solver!r}."
            )
        if not 0 < coupling <= 1:
            raise ValueError(f"`coupling` must lie in (0, 1], got {coupling!r}.")
        self.solver = inner
        self.coupling = coupling

    def order(self, terms):
        return self.solver.order(terms)

    def psi(self, terms, ta, tb, y, args):
        """One step of the wrapped solver from `ta` to `tb` (which may be earlier)."""
        state = self.solver.init(terms, ta, tb, y, args)
        return take_step(self.solver, terms, ta, tb, y, args, state)[0]

    def init(self, terms, t0, t1, y0, args):
        return y0

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        z0 = solver_state
        lam = self.coupling
        y1 = (lam * (y0**ω - z0**ω) + self.psi(terms, t0, t1, z0, args) ** ω).ω
        z1 = (y1**ω + z0**ω - self.psi(terms, t1, t0, y1, args) ** ω).ω
        return y1, None, dict(y0=y0, y1=y1), z1, dfx.RESULTS.successful

    def inverse_step(self, terms, t0, t1, y1, z1, args):
        """The exact inverse of `step`: `(y0, z0)` from `(y1, z1)`."""
        z0 = (z1**ω - y1**ω + self.psi(terms, t1, t0, y1, args) ** ω).ω
        y0 = (
            z0**ω + (y1**ω - self.psi(terms, t0, t1, z0, args) ** ω) / self.coupling
        ).ω
        return y0, z0

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


REVERSIBLE_NAMES = (
    "symplectic_euler",
    "leapfrog",
    "reversible_heun",
    "neuralde.ReversibleRK(<rk solver>)",
)


def is_reversible(solver: dfx.AbstractSolver) -> bool:
    """Whether each fixed step of `solver` can be undone exactly from its output."""
    return isinstance(
        solver, dfx.SemiImplicitEuler | Leapfrog | dfx.ReversibleHeun | ReversibleRK
    )


def check_fixed_steps(solver: dfx.AbstractSolver) -> None:
    """Refuse an implicit solver whose root finder takes its tolerances from an
    adaptive step-size controller (diffrax's default): fixed steps have none."""
    finder = getattr(solver, "root_finder", None)
    if isinstance(solver, dfx.AbstractImplicitSolver) and not isinstance(
        getattr(finder, "rtol", None), int | float
    ):
        raise ValueError(
            f"{type(solver).__name__} with fixed steps needs tolerances for its root "
            "finder, which diffrax otherwise takes from an adaptive step-size "
            "controller: e.g. `root_finder=diffrax.VeryChord(rtol=1e-8, "
            "atol=1e-8)`. Or pass `rtol=`/`atol=` to `solve` for adaptive steps."
        )
