"""Linear stability of a solver's step: is $\\Delta t\\,\\lambda$ in the region of
absolute stability for every eigenvalue $\\lambda$ of the field's Jacobian?"""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Complex, Float, PyTree

from .._solvers import get_solver, is_two_stream, Leapfrog, ReversibleRK
from ..fields import AbstractTwoStreamField
from ._common import check_positive
from ._spectrum import jacobian_spectrum


SUPPORTED = (
    "euler, midpoint, heun, rk4, tsit5, dopri5 (or any diffrax.AbstractERK), "
    "symplectic_euler, leapfrog, reversible_heun, neuralde.ReversibleRK(<rk solver>)"
)


def stability_function(
    solver: str | dfx.AbstractSolver, z: Complex[ArrayLike, "*shape"]
) -> Complex[Array, "*shape"]:
    """The stability function $R(z)$ of a solver: one step of size $\\Delta t$ on
    the test equation $\\dot y = \\lambda y$ multiplies $y$ by $R(z)$,
    $z = \\Delta t\\,\\lambda$. The step is stable for $\\lambda$ when
    $|R(z)| \\le 1$.

    - Explicit Runge–Kutta methods: the polynomial
        $R(z) = 1 + \\sum_{m \\ge 1} (b^\\top A^{m-1} \\mathbf 1) z^m$ of the Butcher
        tableau: $1 + z$ (`euler`), $1 + z + z^2/2$ (`midpoint`, `heun`),
        $\\sum_{m \\le 4} z^m/m!$ (`rk4`), and likewise for `tsit5`, `dopri5` or any
        `diffrax.AbstractERK`.
    - Methods whose step on the test equation is a $2 \\times 2$ matrix: its
        eigenvalue of largest modulus, which decides stability.
        - `symplectic_euler`, `leapfrog`: on $\\ddot y = \\mu y$, i.e. the two-stream
            system $\\dot y = v$, $\\dot v = \\mu y$ with eigenvalues
            $\\lambda = \\pm\\sqrt\\mu$, both methods give
            $y_{n+1} - (2 + z^2) y_n + y_{n-1} = 0$. Stable exactly on the imaginary
            segment $z \\in [-2i, 2i]$: for an oscillation of frequency $\\omega$,
            $\\Delta t\\,\\omega \\le 2$ (at $\\Delta t\\,\\omega = 2$ a double root
            $-1$ grows linearly).
        - `reversible_heun`: $\\rho^2 - 2z\\rho - 1 = 0$; stable exactly on
            $z \\in [-i, i]$ (Kidger et al. 2021).
        - `neuralde.ReversibleRK(rk, coupling=c)`: $\\rho^2 - T\\rho + c = 0$ with
            $T = 1 + c + (1 - R(-z))(R(z) - c)$ and $R$ that of `rk`. One root
            approximates $e^z$; the other, about $c\\,e^{-z}$, is parasitic and grows
            for decaying modes with $\\operatorname{Re} z < \\log c$: with the
            default $c = 0.999$, `ReversibleRK("rk4")` on $\\dot y = -y$ is unstable
            for $\\Delta t = 0.1$ ($|\\rho| = 1.104$).

    **Arguments:**

    - `solver`: a solver name of [`neuralde.solve`][], or a diffrax solver of the
        kinds above.
    - `z`: $\\Delta t\\,\\lambda$, any shape, real or complex.

    **Returns:** $R(z)$, complex, shaped like `z`.
    """
    return _stability_fn(get_solver(solver))(_complex(z))


def _complex(z):
    z = jnp.asarray(z)
    return z.astype(jnp.result_type(z.dtype, jnp.complex64))


def _stability_fn(solver: dfx.AbstractSolver) -> Callable[[Array], Array]:
    if isinstance(solver, dfx.Euler):
        return lambda z: 1 + z
    if isinstance(solver, dfx.AbstractERK):
        coeffs = _erk_coefficients(solver.tableau)
        return lambda z: jnp.polyval(jnp.asarray(coeffs[::-1], z.dtype), z)
    if isinstance(solver, dfx.SemiImplicitEuler | Leapfrog):
        return lambda z: _dominant_root(2 + z**2, 1)
    if isinstance(solver, dfx.ReversibleHeun):
        return lambda z: _dominant_root(2 * z, -1)
    if isinstance(solver, ReversibleRK):
        inner = _stability_fn(solver.solver)
        c = solver.coupling

        def fn(z):
            trace = 1 + c + (1 - inner(-z)) * (inner(z) - c)
            return _dominant_root(trace, c)

        return fn
    raise ValueError(
        f"No stability function is known for {type(solver).__name__}. Supported: "
        f"{SUPPORTED}."
    )


def _erk_coefficients(tableau: dfx.ButcherTableau) -> np.ndarray:
    """$[1, b^\\top \\mathbf 1, b^\\top A \\mathbf 1, \\dots]$: the coefficients of
    $R(z) = 1 + z\\,b^\\top (I - zA)^{-1} \\mathbf 1$ for a strictly lower
    triangular (nilpotent) $A$."""
    s = len(tableau.b_sol)
    A = np.zeros((s, s))
    for i, row in enumerate(tableau.a_lower):
        A[i + 1, : i + 1] = row
    coeffs = [1.0]
    v = np.ones(s)
    for _ in range(s):
        coeffs.append(float(tableau.b_sol @ v))
        v = A @ v
    return np.array(coeffs)


def _dominant_root(trace, det):
    """The root of larger modulus of $\\rho^2 - \\text{trace}\\,\\rho + \\text{det}$.
    It is the one without cancellation, so it is accurate."""
    half = trace / 2
    disc = jnp.sqrt(half**2 - det)
    plus, minus = half + disc, half - disc
    return jnp.where(jnp.abs(plus) >= jnp.abs(minus), plus, minus)


class StepStability(eqx.Module):
    """The result of [`neuralde.stability.step_stability`][].

    - `eigenvalues`: the eigenvalues $\\lambda$ of the Jacobian, sorted by
        decreasing real part.
    - `amplification`: $|R(\\Delta t\\,\\lambda)|$ for each of them: the factor by
        which one step scales that mode.
    - `stable`: whether every amplification is at most $1 + $ `tol`.
    """

    eigenvalues: Complex[Array, " n"]
    amplification: Float[Array, " n"]
    stable: Bool[Array, ""]


def step_stability(
    field: Callable[[ArrayLike, PyTree[Array], PyTree], PyTree[Array]],
    t: ArrayLike,
    y: PyTree[Array],
    args: PyTree = None,
    *,
    solver: str | dfx.AbstractSolver,
    dt: float | Float[ArrayLike, ""],
    tol: float | None = None,
) -> StepStability:
    """Whether a step of size `dt` of `solver` is linearly stable for the field at
    one state: is $\\Delta t\\,\\lambda$ in the solver's region of absolute stability
    for every eigenvalue $\\lambda$ of $\\partial F(t, y)/\\partial y$?

    This answers questions such as: does forward Euler on an antisymmetric field
    need $\\gamma > 0$? (Yes: for $\\gamma = 0$ the eigenvalues are imaginary,
    $\\lambda = i\\omega$, and $|1 + i\\Delta t\\,\\omega| > 1$ for every step.) What
    step does leapfrog tolerate on a hyperbolic field? ($\\Delta t\\,\\omega \\le 2$ for
    the largest frequency $\\omega$.) It is the frozen-coefficient analysis of the
    linearised field, exact for linear time-independent fields.

    **Arguments:**

    - `field`, `t`, `y`, `args`: as for [`neuralde.stability.jacobian_spectrum`][]
        (the dense method).
    - `solver`: see [`neuralde.stability.stability_function`][]. `symplectic_euler`
        and `leapfrog` need a two-stream field; their analysis is exact for the
        linear system $\\dot y = A z$, $\\dot z = B y$, whose eigenvalues are
        $\\pm\\sqrt{\\operatorname{eig}(AB)}$.
    - `dt`: the step size (may be traced: `jax.vmap` over step sizes).
    - `tol`: the allowance for round-off in the eigenvalues: amplifications up to
        $1 + $ `tol` count as neutral (such as $|R(0)| = 1$). Default:
        $1000\\,\\varepsilon \\min(1, \\max_i |\\Delta t\\,\\lambda_i|)$, with
        $\\varepsilon$ the machine epsilon of the state's dtype: the eigenvalues'
        round-off is about $\\varepsilon \\|J\\|$, which moves an amplification
        near 1 by about $\\varepsilon \\Delta t \\|J\\|$. So Euler's
        $|1 + i\\Delta t\\,\\omega| \\approx 1 + (\\Delta t\\,\\omega)^2/2$ counts as
        unstable down to $\\Delta t\\,\\omega \\approx 2000\\,\\varepsilon$.

    **Returns:** a [`neuralde.stability.StepStability`][] with `eigenvalues`,
    `amplification` and `stable`.

    Works under `jax.jit` (`eqx.filter_jit`) and `jax.vmap`.
    """
    solver_obj = get_solver(solver)
    fn = _stability_fn(solver_obj)
    if is_two_stream(solver_obj) and not isinstance(field, AbstractTwoStreamField):
        raise TypeError(
            f"{type(solver_obj).__name__} acts on two streams `(y, z)`: it needs a "
            "`neuralde.fields.AbstractTwoStreamField`, got "
            f"{type(field).__name__}. Use a one-term solver such as 'rk4'."
        )
    check_positive(dt, "dt")
    if tol is not None and not tol >= 0:
        raise ValueError(f"`tol` must be >= 0, got {tol!r}.")
    eigenvalues = jacobian_spectrum(field, t, y, args)
    dtype = jnp.finfo(eigenvalues.dtype).dtype
    z = jnp.asarray(dt, dtype) * eigenvalues
    if tol is None:
        tol = 1000 * jnp.finfo(dtype).eps * jnp.minimum(1, jnp.max(jnp.abs(z)))
    amplification = jnp.abs(fn(z))
    return StepStability(
        eigenvalues=eigenvalues,
        amplification=amplification,
        stable=jnp.all(amplification <= 1 + tol),
    )
