import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from equinox.internal import ω

from .. import _steps
from .._noise import calculus_of
from .._solvers import get_solver
from ._base import AbstractGradient, dense_cotangent
from ._diffrax import _check_one_term, backsolve_on, diffeqsolve


class Adjoint(AbstractGradient):
    """The continuous adjoint (optimise-then-discretise; Chen et al. 2018): the
    gradient of the exact flow, by solving the adjoint equations
    $\\dot a = -a^\\top \\partial_y F$, $\\dot g = -a^\\top \\partial_\\theta F$
    backwards from $t_1$, together with $y$ itself. Memory does not grow with the
    number of steps. It approximates the gradient of the discrete network to the
    order of the solver (align steps with layer boundaries: see the docs).

    Fixed steps run in neuralde's loop: the backward solve takes the forward steps
    reversed, with `solver` (default: the forward solver). It is a custom VJP, so
    under `jax.vmap` its backward pass runs per example: pass the batch to `solve`
    instead (see `neuralde.solve`'s `batched`). Gradients with respect to `t0` and
    `t1` are those of the continuous adjoint, $\\partial L/\\partial t_1 =
    a(t_1)^\\top F(t_1, y_1)$ and $\\partial L/\\partial t_0 = -a(t_0)^\\top
    F(t_0, y_0)$.

    Adaptive solves and `ts=` use `diffrax.BacksolveAdjoint`. One-term solvers only.
    """

    solver: dfx.AbstractSolver | None = None

    def __init__(self, solver: str | dfx.AbstractSolver | None = None):
        """**Arguments:**

        - `solver`: the solver of the backward pass, a name or a diffrax solver.
            Default: the forward solver.
        """
        self.solver = None if solver is None else get_solver(solver)

    def check(self, solver, *, adaptive, ts):
        _check_one_term(solver, 'gradient="adjoint"')
        if self.solver is not None:
            _check_one_term(self.solver, 'gradient="adjoint"')

    def solve(self, problem, y0):
        grid = problem.grid
        back = problem.solver if self.solver is None else self.solver
        kwargs = {} if self.solver is None else dict(solver=self.solver)
        if isinstance(problem.terms, dfx.MultiTerm):
            # An SDE: diffrax's backsolve integrates the Stratonovich adjoint SDE
            # backwards on the same Brownian path.
            for solver in (problem.solver, back):
                if calculus_of(solver) == "ito":
                    raise ValueError(
                        f'`gradient="adjoint"` of an SDE solves the Stratonovich '
                        f"adjoint backwards, which {type(solver).__name__} (Itô) "
                        "does not: use 'heun' or 'reversible_heun', or "
                        '`gradient="reversible"`, "discretize" or "checkpoint".'
                    )
            return diffeqsolve(problem, y0, backsolve_on(problem, kwargs))
        if grid is not None and problem.ts is None:
            terms, args = problem.terms, problem.args
            y1 = _adjoint_loop((y0, terms, args, grid), problem.solver, back)
            return _steps.checked(y1, terms, problem.solver, grid, y0, args)
        if grid is None:
            adjoint = dfx.BacksolveAdjoint(**kwargs)
        else:
            adjoint = backsolve_on(problem, kwargs)
        return diffeqsolve(problem, y0, adjoint)


@eqx.filter_custom_vjp
def _adjoint_loop(vjp_arg, solver, back_solver):
    y0, terms, args, grid = vjp_arg
    y1, _, _ = _steps.scan_steps(terms, solver, grid, y0, args)
    return y1


@_adjoint_loop.def_fwd
def _fwd(perturbed, vjp_arg, solver, back_solver):
    del perturbed
    y0, terms, args, grid = vjp_arg
    y1, _, _ = _steps.scan_steps(terms, solver, grid, y0, args)
    return y1, y1


@_adjoint_loop.def_bwd
def _bwd(y1, ct_y1, perturbed, vjp_arg, solver, back_solver):
    del solver
    y0, terms, args, grid = vjp_arg
    params, static = eqx.partition((terms, args), eqx.is_inexact_array)
    ct_y1 = dense_cotangent(ct_y1, y1)

    def rate(t, y, params):
        terms, args = eqx.combine(params, static)
        return terms.vf(t, y, args)

    def augmented(t, state, _):
        # (y, a, g) -> (F, -a dF/dy, -a dF/dtheta): integrated from t1 back to t0,
        # a(t0) is dL/dy0 and g(t0) is dL/dtheta.
        y, a, _ = state
        f, vjp = jax.vjp(lambda y, p: rate(t, y, p), y, params)
        ct_y, ct_p = vjp(a)
        return f, (-(ct_y**ω)).ω, (-(ct_p**ω)).ω

    zeros = jtu.tree_map(jnp.zeros_like, params)
    init = (y1, ct_y1, zeros)
    back = _steps.Reversed(grid)
    (_, a0, g), _, _ = _steps.scan_steps(
        dfx.ODETerm(augmented), back_solver, back, init, None
    )
    ct_terms, ct_args = g
    _, _, _, perturbed_grid = perturbed
    ct_grid = jtu.tree_map(lambda _: None, grid)
    if perturbed_grid.t0 or perturbed_grid.t1:
        dot = lambda a, b: sum(  # noqa: E731
            jnp.vdot(x, z) for x, z in zip(jtu.tree_leaves(a), jtu.tree_leaves(b))
        )
        ct_t0 = -dot(a0, rate(grid(0), y0, params))
        ct_t1 = dot(ct_y1, rate(grid(grid.n), y1, params))
        ct_grid = _steps.StepGrid(
            ct_t0.astype(grid.t0.dtype) if perturbed_grid.t0 else None,
            ct_t1.astype(grid.t1.dtype) if perturbed_grid.t1 else None,
            None,
            grid.n,
            grid.labels,
        )
    return a0, ct_terms, ct_args, ct_grid
