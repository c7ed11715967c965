"""How much the flow map of the discrete network amplifies perturbations of its
input: the largest singular value of $\\partial y(T)/\\partial y(0)$ from JVPs and
VJPs, and the growth of actual random and adversarial perturbations."""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from .._checks import positive_int
from ._common import check_positive, FixedSteps, flat_state
from ._spectrum import arnoldi


class FlowSensitivity(eqx.Module):
    """The result of [`neuralde.stability.flow_sensitivity`][].

    - `sigma_max`: $M = \\sigma_{\\max}(\\partial y(T)/\\partial y(0))$, the stability
        constant: $\\|\\delta y(T)\\| \\le M \\|\\delta y(0)\\|$ to first order.
    - `lyapunov`: $\\log M / (T - t_0)$, the finite-time Lyapunov exponent: the
        growth rate of the most amplified perturbation per unit time (positive:
        perturbations grow).
    - `direction`: the unit perturbation of `y0` that is amplified most (the top
        right-singular vector), shaped like `y0`.
    """

    sigma_max: Float[Array, ""]
    lyapunov: Float[Array, ""]
    direction: PyTree[Array]


class PerturbationGrowth(eqx.Module):
    """The result of [`neuralde.stability.perturbation_growth`][]: ratios
    $\\|y(T) - \\tilde y(T)\\| / \\|y(0) - \\tilde y(0)\\|$.

    - `random`: for each random perturbation.
    - `adversarial`: for the perturbation along the most amplified direction.
    - `sigma_max`: the first-order prediction for the adversarial ratio, as in
        [`neuralde.stability.FlowSensitivity`][].
    """

    random: Float[Array, " samples"]
    adversarial: Float[Array, ""]
    sigma_max: Float[Array, ""]


def flow_sensitivity(
    field: Callable[[ArrayLike, PyTree[Array], PyTree], PyTree[Array]],
    y0: PyTree[Array],
    *,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    dt0: float | None = None,
    solver: str | dfx.AbstractSolver = "rk4",
    args: PyTree = None,
    iterations: int = 20,
    key: PRNGKeyArray,
) -> FlowSensitivity:
    """The stability constant of the discrete network: the largest singular value of
    the Jacobian of its flow map, $M = \\|\\partial y(T)/\\partial y(0)\\|_2$.

    The flow map is the fixed-step solve (the `lax.scan` of
    `neuralde.solve(..., gradient="discretize")`), linearised once with
    `jax.linearize`. Each iteration applies $J^\\top J$ to a vector, by one JVP
    and one VJP of the stored linearisation; $J$ is never formed. The iterates are
    not just normalised, as in power iteration, but kept as an orthonormal Krylov
    basis (Lanczos' method on $J^\\top J$, with full re-orthogonalisation), and the
    estimate is the best vector of that space: it is never worse than power
    iteration with the same number of products, converges much faster when
    $\\sigma_1 \\approx \\sigma_2$, and is exact once `iterations` reaches the size
    of the state. The estimate $\\|Jv\\|$ approaches $\\sigma_{\\max}$ from below.
    Memory: `iterations` vectors of the state's size, besides the stored
    trajectory.

    **Arguments:**

    - `field`, `y0`, `t0`, `t1`, `steps`, `dt0`, `solver`, `args`: as for
        [`neuralde.solve`][]; the solve must take fixed steps (`steps=` or `dt0=`).
        A two-stream state `(y, z)` is perturbed as a whole.
    - `iterations`: the number of products with $J^\\top J$ (the dimension of the
        Krylov space; capped at the size of the state).
    - `key`: PRNG key for the random start vector (and the fresh directions that
        Lanczos takes if its Krylov space becomes invariant). (Keyword only.)

    **Returns:** a [`neuralde.stability.FlowSensitivity`][] with `sigma_max`,
    `lyapunov` ($\\log M / (t_1 - t_0)$) and `direction`.

    Works under `jax.jit` (`iterations` and `steps` static: use `eqx.filter_jit`)
    and `jax.vmap` (over `y0` and `key`).
    """
    positive_int(iterations, "iterations")
    run = FixedSteps(
        field,
        y0,
        t0=t0,
        t1=t1,
        steps=steps,
        dt0=dt0,
        solver=solver,
        args=args,
        name="flow_sensitivity",
        forward_mode=True,
    )
    x0, _ = flat_state(y0)
    randoms = jr.normal(key, (min(iterations, x0.size) + 1, x0.size), x0.dtype)
    sigma, v, _, _ = _top_singular(run, y0, randoms)
    _, unravel = ravel_pytree(y0)
    return FlowSensitivity(
        sigma_max=sigma,
        lyapunov=jnp.log(sigma) / (run.t1 - run.t0),
        direction=unravel(v),
    )


def _top_singular(run: FixedSteps, y0, randoms):
    """$(\\sigma_{\\max}, v, y_n, \\text{flat flow})$ for the flow map of `run`, by
    Lanczos' method on $J^\\top J$ (see `arnoldi` for `randoms`)."""
    x0, unravel = flat_state(y0)

    def flow(x):
        return ravel_pytree(run.flow(unravel(x)))[0]

    x1, jvp = jax.linearize(flow, x0)
    vjp = jax.linear_transpose(jvp, x0)

    def gram(v):
        return vjp(jvp(v))[0]

    V, H = arnoldi(gram, randoms)
    # H is symmetric tridiagonal up to round-off; its top eigenvector gives the Ritz
    # vector, and |J v| <= sigma_max is the estimate.
    _, vecs = jnp.linalg.eigh(0.5 * (H + H.T))
    v = V.T @ vecs[:, -1]
    v = v / jnp.linalg.norm(v)
    return jnp.linalg.norm(jvp(v)), v, x1, flow


def perturbation_growth(
    field: Callable[[ArrayLike, PyTree[Array], PyTree], PyTree[Array]],
    y0: PyTree[Array],
    *,
    eps: float,
    samples: int = 16,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    dt0: float | None = None,
    solver: str | dfx.AbstractSolver = "rk4",
    args: PyTree = None,
    iterations: int = 20,
    diffusion: Callable | None = None,
    paths: int = 16,
    key: PRNGKeyArray,
) -> PerturbationGrowth:
    """How much the discrete network amplifies actual perturbations of size `eps`
    of its input: $\\|y(T) - \\tilde y(T)\\| / \\|y(0) - \\tilde y(0)\\|$.

    Random perturbations are drawn uniformly on the sphere of radius `eps`. The
    adversarial one is `eps` times the most amplified direction of the linearised
    flow (from [`neuralde.stability.flow_sensitivity`][]), with the sign that
    grows more: for small `eps` its ratio approaches `sigma_max` and bounds the
    random ones; for larger `eps` the nonlinearity of the flow shows as the
    difference. Choose `eps` well above the round-off of the state (e.g. `1e-6`
    in float64, `1e-3` in float32), since the ratio is a difference quotient.

    **Arguments:**

    - `field`, `y0`, `t0`, `t1`, `steps`, `dt0`, `solver`, `args`: as for
        [`neuralde.solve`][], with fixed steps (`steps=` or `dt0=`).
    - `eps`: the norm of each perturbation (of the whole state).
    - `samples`: the number of random perturbations.
    - `iterations`: Lanczos iterations for the adversarial direction, as for
        [`neuralde.stability.flow_sensitivity`][].
    - `diffusion`: for a neural SDE, its diffusion, as for [`neuralde.solve`][]
        (with an SDE solver). Both solutions of each ratio are driven by the same
        Brownian path, and the result is the sample mean over `paths` paths.
    - `paths`: the number of Brownian paths, with `diffusion`.
    - `key`: PRNG key for the random perturbations, the Lanczos iteration and the
        Brownian paths. (Keyword only.)

    **Returns:** a [`neuralde.stability.PerturbationGrowth`][] with `random` (one
    ratio per sample), `adversarial` and `sigma_max`; with `diffusion`, each the
    mean over the paths.

    Works under `jax.jit` (`eqx.filter_jit`) and `jax.vmap`.
    """
    check_positive(eps, "eps")
    positive_int(samples, "samples")
    positive_int(iterations, "iterations")

    def growth(path_key) -> PerturbationGrowth:
        run = FixedSteps(
            field,
            y0,
            t0=t0,
            t1=t1,
            steps=steps,
            dt0=dt0,
            solver=solver,
            args=args,
            name="perturbation_growth",
            forward_mode=True,
            diffusion=diffusion,
            key=path_key,
        )
        return _growth(run, y0, eps, samples, iterations, key)

    if diffusion is None:
        return growth(None)
    positive_int(paths, "paths")
    # The perturbations are those of the ODE; the paths' keys are folded off.
    per_path = jax.vmap(growth)(jr.split(jr.fold_in(key, 1), paths))
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), per_path)


def _growth(run: FixedSteps, y0, eps, samples, iterations, key) -> PerturbationGrowth:
    x0, _ = flat_state(y0)
    k = min(iterations, x0.size)
    randoms = jr.normal(key, (k + 1 + samples, x0.size), x0.dtype)
    sigma, v, x1, flow = _top_singular(run, y0, randoms[: k + 1])
    eps = jnp.asarray(eps, x0.dtype)
    d = randoms[k + 1 :]
    d = eps * d / jnp.linalg.norm(d, axis=1, keepdims=True)
    adversarial = jnp.stack([eps * v, -eps * v])
    # The ratio uses the perturbation's norm as rounded into the state.
    starts = x0 + jnp.concatenate([d, adversarial])
    ends = jax.vmap(flow)(starts)
    ratios = jnp.linalg.norm(ends - x1, axis=1) / jnp.linalg.norm(starts - x0, axis=1)
    return PerturbationGrowth(
        random=ratios[:samples],
        adversarial=jnp.max(ratios[samples:]),
        sigma_max=sigma,
    )
