import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Real

from ._common import check_range, floating, hyper, pair


def pinn(
    u: Callable[[Array], Array],
    residual: Callable[[Callable[[Array], Array], Array], Array],
    x_residual: Float[ArrayLike, " n_residual *point"],
    x_data: Float[ArrayLike, " n_data *point"] | None = None,
    u_data: Real[ArrayLike, " n_data *out"] | None = None,
    *,
    data_weight: float = 1.0,
    residual_weight: float = 1.0,
) -> Float[Array, ""]:
    """The loss of a physics-informed neural network (Raissi et al. 2019).

    $$\\lambda_d \\frac1{N_d}\\sum_i \\|u(x_i) - u_i\\|^2
    + \\lambda_r \\frac1{N_r}\\sum_j \\|\\mathcal R[u](x_j)\\|^2,$$
    a fit to data (which also carries initial and boundary conditions) plus the mean
    squared residual of the differential equation at collocation points $x_j$. Both
    means run over every entry, as in the paper's $\\text{MSE}_u + \\text{MSE}_f$.

    The residual is a function of the network and one point, with its derivatives
    taken by JAX, e.g. for the heat equation $u_t = \\kappa u_{xx}$ at $x = (t, x)$:

    ```python
    def heat(u, x):
        u_t = jax.jacfwd(u)(x)[0]
        u_xx = jax.hessian(u)(x)[1, 1]
        return u_t - 0.1 * u_xx
    ```

    (forward mode, `jax.jacfwd`, is the cheap choice for the few inputs of a PDE).

    **Arguments:**

    - `u`: the network, a function of one point returning the solution there (an
        `eqx.Module` works; differentiate the loss with `eqx.filter_grad`).
    - `residual`: `residual(u, x)`, the equation's residual at one point.
    - `x_residual`: the collocation points, stacked on the leading axis.
    - `x_data`, `u_data`: points and the solution's values there, or `None` for an
        equation without data. `u(x_data[i])` must have the shape of `u_data[i]`.
    - `data_weight`, `residual_weight`: $\\lambda_d, \\lambda_r \\ge 0$.

    **Returns:** the scalar loss.

    ??? cite "Reference"
        ```bibtex
        @article{raissi2019physics,
            title={Physics-informed neural networks: A deep learning framework for
                   solving forward and inverse problems involving nonlinear partial
                   differential equations},
            author={Raissi, Maziar and Perdikaris, Paris and Karniadakis, George E.},
            journal={Journal of Computational Physics},
            volume={378}, pages={686--707}, year={2019}
        }
        ```
    """
    name = "pinn"
    xr = floating(name, "x_residual", x_residual)
    if xr.ndim == 0 or xr.shape[0] == 0:
        raise ValueError(
            f"{name}: `x_residual` must stack at least one collocation point on its "
            f"leading axis, got shape {xr.shape}."
        )
    if (x_data is None) != (u_data is None):
        raise TypeError(
            f"{name}: give both `x_data` and `u_data`, or neither; got only "
            f"{'`x_data`' if u_data is None else '`u_data`'}."
        )
    lam_r = hyper(name, "residual_weight", residual_weight, xr.dtype)
    lam_r = check_range(name, "residual_weight", lam_r, 0, math.inf)
    r = jax.vmap(lambda x: jnp.asarray(residual(u, x)))(xr)
    loss = lam_r * jnp.mean(r**2)
    if x_data is not None:
        xd = floating(name, "x_data", x_data)
        if xd.ndim == 0 or xd.shape[1:] != xr.shape[1:] or xd.shape[0] == 0:
            raise ValueError(
                f"{name}: `x_data` must stack at least one point of the shape of the "
                f"collocation points, {xr.shape[1:]}; got shape {xd.shape}."
            )
        lam_d = hyper(name, "data_weight", data_weight, xr.dtype)
        lam_d = check_range(name, "data_weight", lam_d, 0, math.inf)
        pred, target = pair(name, jax.vmap(u)(xd), u_data, "u(x_data)", "u_data")
        loss = loss + lam_d * jnp.mean((pred - target) ** 2)
    return loss
