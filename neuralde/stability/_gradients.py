"""The profile of the loss gradient over depth: exploding and vanishing gradients."""

from collections.abc import Callable

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, Float, PyTree, Scalar

from ._common import FixedSteps


def gradient_norms(
    field: Callable[[ArrayLike, PyTree[Array], PyTree], PyTree[Array]],
    y0: PyTree[Array],
    loss: Callable[[PyTree[Array]], Scalar],
    *,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    dt0: float | None = None,
    solver: str | dfx.AbstractSolver = "rk4",
    args: PyTree = None,
) -> Float[Array, " steps_plus_1"]:
    """The norm of the gradient of the loss with respect to the state after every
    step: $\\|\\partial L / \\partial y_j\\|_2$ for $j = 0, \\dots, n$.

    For a ResNet (`solver="euler"`, one step per layer) this is the gradient that
    reaches layer $j$ in backpropagation: it explodes towards the input when the
    backward dynamics are unstable and vanishes when they are strongly contracting.
    Stable architectures keep it of the same order over the depth (Haber & Ruthotto
    2017).

    It is computed by adding a zero perturbation $\\delta_j$ to the state after
    each step of the fixed-step scan and differentiating $L(y_n)$ with respect to
    all the $\\delta_j$ in one backward pass: $\\partial L/\\partial \\delta_j =
    \\partial L/\\partial y_j$. For solvers that carry a state of their own
    (`reversible_heun`, `neuralde.ReversibleRK`), $y_j$ is the solution component,
    and the solver state is held fixed (except at $j = 0$, from which it is
    initialised).

    **Arguments:**

    - `field`, `y0`, `t0`, `t1`, `steps`, `dt0`, `solver`, `args`: as for
        [`neuralde.solve`][], with fixed steps (`steps=` or `dt0=`).
    - `loss`: a function of the final state, `loss(y_n) -> scalar`, for one
        example. Close over the label: `lambda y: cross_entropy(y, label)`.

    **Returns:** an array of length $n + 1$ (the number of steps plus one): entry
    `0` is the gradient norm at the input, entry `n` at the output. Norms are taken
    over the whole state (both streams of a two-stream state).

    Works under `jax.jit` (`eqx.filter_jit`) and `jax.vmap` (over `y0` and what
    `loss` closes over).
    """
    run = FixedSteps(
        field,
        y0,
        t0=t0,
        t1=t1,
        steps=steps,
        dt0=dt0,
        solver=solver,
        args=args,
        name="gradient_norms",
    )
    if not callable(loss):
        raise TypeError(f"`loss` must be a function of the final state, got {loss!r}.")
    out = jax.eval_shape(loss, y0)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"`loss` must return a scalar for one example, got {shape}. Reduce it "
            "(e.g. `jnp.sum`), and batch `gradient_norms` with `jax.vmap`."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"`loss` must return a floating scalar, got {out.dtype}.")
    n = run.grid.n
    deltas = jtu.tree_map(
        lambda x: jnp.zeros((n + 1, *jnp.shape(x)), jnp.result_type(x)), y0
    )

    def perturbed_loss(deltas):
        y1, _ = run.trajectory(y0, deltas=deltas)
        return loss(y1)

    grads = jax.grad(perturbed_loss)(deltas)
    squares = [
        jnp.sum(g.reshape(n + 1, -1) ** 2, axis=1) for g in jtu.tree_leaves(grads)
    ]
    return jnp.sqrt(sum(squares))
