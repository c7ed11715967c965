"""Eigenvalues of the Jacobian $\\partial F/\\partial y$ of a vector field: dense, or
estimated matrix-free by Arnoldi's method."""

from collections.abc import Callable
from typing import Literal

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Complex, Float, PRNGKeyArray, PyTree

from .._checks import positive_int
from .._solve import check_field_output, solve
from ._common import flat_state


METHODS = ("dense", "arnoldi")
Method = Literal["dense", "arnoldi"]


def jacobian_spectrum(
    field: Callable[[ArrayLike, PyTree[Array], PyTree], PyTree[Array]],
    t: ArrayLike,
    y: PyTree[Array],
    args: PyTree = None,
    *,
    method: Method = "dense",
    krylov: int = 20,
    key: PRNGKeyArray | None = None,
) -> Complex[Array, " k"]:
    """Eigenvalues of the Jacobian $J = \\partial F(t, y)/\\partial y$ of a field at
    one state.

    The state may be any PyTree; a two-stream state `(y, z)` is flattened (with
    `jax.flatten_util.ravel_pytree`), so $J$ is the Jacobian of the whole first-order
    system. Along a trajectory or over a batch, `jax.vmap` it:

    ```python
    ys = nde.solve(field, y0, ts=ts, steps=100)
    spectra = jax.vmap(lambda t, y: jacobian_spectrum(field, t, y))(ts, ys)
    ```

    (or use [`neuralde.stability.trajectory_spectrum`][]).

    **Arguments:**

    - `field`: the vector field, `field(t, y, args)`.
    - `t`: the time, which selects the layer of a time-dependent field.
    - `y`: the state of one example.
    - `args`: passed to `field`.
    - `method`:
        - `"dense"` (default): $J$ from `jax.jacfwd` ($n$ JVPs), then all its
            eigenvalues by `jnp.linalg.eigvals`. For small states: $O(n^3)$.
        - `"arnoldi"`: matrix-free. `krylov` steps of Arnoldi's method build an
            orthonormal basis $V$ of the Krylov space
            $\\operatorname{span}\\{v, Jv, \\dots, J^{k-1}v\\}$ from JVPs alone (with
            full re-orthogonalisation), and returns the eigenvalues of the small
            Hessenberg matrix $H = V^\\top J V$ (the Ritz values). The outermost
            eigenvalues converge first: those of largest modulus, and the right- and
            leftmost ones when they stand apart from the rest, so `[0].real`
            estimates the spectral abscissa. Interior Ritz values are not
            eigenvalues. Costs $k$ JVPs and $O(nk^2)$.
    - `krylov`: the dimension $k$ of the Krylov space for `"arnoldi"` (capped at
        the state's size $n$, where the Ritz values are the eigenvalues).
    - `key`: PRNG key for the random start vector of `"arnoldi"`. (Keyword only.)

    **Returns:** the eigenvalues ($n$ of them for `"dense"`) or Ritz values
    ($\\min(k, n)$ for `"arnoldi"`), complex, sorted by decreasing real part (then by
    imaginary part). So `[0].real` is the spectral abscissa
    $\\max_i \\operatorname{Re}\\lambda_i$, which decides whether small perturbations
    grow under the continuous flow, and `jnp.max(jnp.abs(...))` the spectral radius,
    which with the step size decides the stability of a solver (see
    [`neuralde.stability.step_stability`][]).

    Works under `jax.jit` (`method` and `krylov` static: use `eqx.filter_jit`) and
    `jax.vmap`. The non-symmetric eigensolver behind both methods
    (`jnp.linalg.eigvals`) runs on CPU and on CUDA/ROCm GPUs (where JAX uses
    cuSOLVER or a LAPACK kernel on the host), not on TPU; `"arnoldi"` needs it for
    a $k \\times k$ matrix only.
    """
    _check_method(method, krylov, key)
    x, unravel = flat_state(y)
    t = jnp.asarray(t, x.dtype)
    check_field_output(field, t, y, args)

    def flat_field(x):
        return ravel_pytree(field(t, unravel(x), args))[0]

    if method == "dense":
        eigenvalues = jnp.linalg.eigvals(jax.jacfwd(flat_field)(x))
    else:
        _, jvp = jax.linearize(flat_field, x)
        randoms = jr.normal(key, (min(krylov, x.size) + 1, x.size), x.dtype)
        _, hessenberg = arnoldi(jvp, randoms)
        eigenvalues = jnp.linalg.eigvals(hessenberg)
    order = jnp.lexsort((eigenvalues.imag, -eigenvalues.real))
    return eigenvalues[order]


def _check_method(method, krylov, key) -> None:
    if method not in METHODS:
        raise ValueError(
            f"Unknown method {method!r}. Use one of {', '.join(map(repr, METHODS))}."
        )
    positive_int(krylov, "krylov")
    if method == "arnoldi" and key is None:
        raise ValueError(
            '`method="arnoldi"` starts from a random vector: pass a PRNG `key=`.'
        )
    if method == "dense" and key is not None:
        raise ValueError('`key` is used by `method="arnoldi"` only.')


def arnoldi(
    matvec: Callable[[Float[Array, " n"]], Float[Array, " n"]],
    randoms: Float[Array, "k_plus_1 n"],
) -> tuple[Float[Array, "k n"], Float[Array, "k k"]]:
    """$k$ steps of Arnoldi's method on the linear map `matvec` of $\\mathbb R^n$,
    $k \\le n$: the orthonormal Krylov basis $V$ (as rows) and the Hessenberg matrix
    $H = V^\\top A V$.

    `randoms` holds $k + 1$ random vectors: the start, and a fresh direction for
    each step. (One draw for all of them: on CPU, compiling each call of the
    threefry generator costs more than the loop.)

    Each new vector is orthogonalised twice by classical Gram–Schmidt ("twice is
    enough", Giraud et al. 2005). When the Krylov space becomes invariant (a
    "lucky breakdown": the new vector is lost in round-off), the basis continues
    from the step's fresh direction, orthogonalised, and the subdiagonal entry is
    zero. $H$ is then block upper triangular, and the eigenvalues of each block are
    eigenvalues of $A$ (of $A$ on the invariant subspace, and of $A$ compressed to
    its complement), so no spurious zeros enter the spectrum.
    """
    k = randoms.shape[0] - 1
    dtype = randoms.dtype
    restarts = randoms[1:]
    eps = jnp.finfo(dtype).eps

    def orthogonalise(V, w):
        h1 = V @ w
        w1 = w - V.T @ h1
        h2 = V @ w1
        return h1 + h2, w1, w1 - V.T @ h2

    def normalise(w):
        norm = jnp.linalg.norm(w)
        return w / jnp.where(norm > 0, norm, 1)

    def body(j, carry):
        V, H = carry
        w = matvec(V[j])
        h, w1, w2 = orthogonalise(V, w)
        beta = jnp.linalg.norm(w2)
        # Kahan–Parlett: if the second pass removed most of what the first left,
        # that remainder was round-off, and the space is invariant.
        scale = jnp.linalg.norm(w)
        broke = ~(beta > jnp.maximum(0.5 * jnp.linalg.norm(w1), eps * scale))
        fresh = normalise(orthogonalise(V, restarts[j])[2])
        V = V.at[j + 1].set(jnp.where(broke, fresh, normalise(w2)))
        H = H.at[:, j].set(h.at[j + 1].set(jnp.where(broke, 0, beta)))
        return V, H

    V = jnp.zeros_like(randoms).at[0].set(normalise(randoms[0]))
    H = jnp.zeros((k + 1, k), dtype)
    V, H = jax.lax.fori_loop(0, k, body, (V, H))
    return V[:k], H[:k]


def trajectory_spectrum(
    field: Callable[[ArrayLike, PyTree[Array], PyTree], PyTree[Array]],
    y0: PyTree[Array],
    ts: Float[ArrayLike, " times"],
    *,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    dt0: float | None = None,
    solver: str | dfx.AbstractSolver = "rk4",
    args: PyTree = None,
    method: Method = "dense",
    krylov: int = 20,
    key: PRNGKeyArray | None = None,
) -> Complex[Array, "times k"]:
    """The Jacobian spectrum along a trajectory: [`neuralde.solve`][] from `y0` to
    the times `ts`, then [`neuralde.stability.jacobian_spectrum`][] at each
    `(ts[i], y(ts[i]))`.

    **Arguments:**

    - `field`, `y0`, `ts`, `t0`, `t1`, `steps`, `dt0`, `solver`, `args`: as for
        [`neuralde.solve`][].
    - `method`, `krylov`, `key`: as for [`neuralde.stability.jacobian_spectrum`][];
        the same start vector serves every time.

    **Returns:** the spectra stacked on a leading axis of the length of `ts`, each
    sorted by decreasing real part.
    """
    _check_method(method, krylov, key)
    ys = solve(
        field,
        y0,
        t0=t0,
        t1=t1,
        steps=steps,
        dt0=dt0,
        solver=solver,
        ts=ts,
        args=args,
    )
    ts = jnp.asarray(ts, jax.tree.leaves(ys)[0].dtype)

    def spectrum(t, y):
        return jacobian_spectrum(
            field, t, y, args, method=method, krylov=krylov, key=key
        )

    return jax.vmap(spectrum)(ts, ys)
