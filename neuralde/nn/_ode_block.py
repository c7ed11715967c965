from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._solve import Gradient, solve
from .._solvers import get_solver
from ..fields import AbstractField
from ..gradients import AbstractGradient, as_gradient


class ODEBlock(eqx.Module):
    """A continuous-time block: `y -> solve(field, y, ...)`, the state at `t1`; with
    `diffusion=`, a neural SDE `dy = F dt + g dW`, whose every call draws the
    Brownian motion of its `key`.

    It drops into a model like any layer (for example between the stem and the head
    of a classifier, or in `eqx.nn.Sequential`), and trains under every gradient
    mode of [`neuralde.solve`][]. It takes one example or, like `solve`, a batch
    by shape: a batch is the fast way for the `"adjoint"` and `"reversible"`
    gradients, whose backward passes then see the whole batch (under `jax.vmap`
    they run per example). In a model, apply the per-example layers with
    `jax.vmap` and the block to the batch:

    ```python
    h = jax.vmap(stem)(x)  # (batch, dim)
    h = block(h)           # the whole batch in one solve
    logits = jax.vmap(head)(h)
    ```

    !!! Example

        ```python
        field = nde.fields.Hamiltonian(in_size=16, width_size=32, layers=8, key=key)
        block = nde.nn.ODEBlock(field, steps=8, solver="leapfrog",
                                gradient="reversible")
        y1, z1 = block((y0, jnp.zeros_like(y0)))
        ```

    !!! Example "A neural SDE"

        ```python
        noise = lambda t, y, args: 0.1 * jnp.ones_like(y)  # additive noise
        block = nde.nn.ODEBlock(field, diffusion=noise, steps=16,
                                solver="reversible_heun", gradient="reversible")
        y1 = block(y0, key=key)  # a fresh key per training step
        ```

        `nde.train.fit` passes a fresh key to a loss that takes one; wrap the model
        in [`neuralde.nn.Ensemble`][] to predict with the mean over paths.
    """

    field: AbstractField
    diffusion: Callable | None
    t0: float = eqx.field(static=True)
    t1: float | None = eqx.field(static=True)
    steps: int | None = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    solver: str | dfx.AbstractSolver = eqx.field(static=True)
    gradient: AbstractGradient = eqx.field(static=True)
    rtol: float | None = eqx.field(static=True)
    atol: float | None = eqx.field(static=True)
    batched: bool | None = eqx.field(static=True)
    calculus: str | None = eqx.field(static=True)

    def __init__(
        self,
        field: AbstractField,
        *,
        diffusion: Callable | None = None,
        calculus: str | None = None,
        t0: float = 0.0,
        t1: float | None = None,
        steps: int | None = None,
        dt0: float | None = None,
        solver: str | dfx.AbstractSolver = "rk4",
        gradient: Gradient | AbstractGradient | dfx.AbstractAdjoint = "discretize",
        rtol: float | None = None,
        atol: float | None = None,
        batched: bool | None = None,
    ):
        """**Arguments:** the vector field, then the options of
        [`neuralde.solve`][] (keyword only), with the same defaults: `t1=None`
        integrates over the field's own `[0, t1]`. The solver and gradient names are
        checked here; the rest is checked when the block is first called.

        `batched` is `solve`'s: by default a state with one more leading axis than
        the field's `state_shape()` is a batch. `diffusion` and `calculus` make it
        an SDE, as in `solve`; an equinox module as `diffusion` is trained with the
        field.
        """
        get_solver(solver)
        if diffusion is not None and not callable(diffusion):
            raise TypeError(
                f"`diffusion` must be a callable `diffusion(t, y, args)`, got "
                f"{type(diffusion).__name__}."
            )
        self.field = field
        self.diffusion = diffusion
        self.calculus = calculus
        self.t0 = t0
        self.t1 = t1
        self.steps = steps
        self.dt0 = dt0
        self.solver = solver
        self.gradient = as_gradient(gradient)
        self.rtol = rtol
        self.atol = atol
        self.batched = batched

    def __call__(
        self,
        y: PyTree[Array],
        *,
        args: PyTree = None,
        key: PRNGKeyArray | None = None,
    ) -> PyTree[Array]:
        """**Arguments:**

        - `y`: the initial state of one example or of a batch (a tuple `(y, z)`
            for two-stream fields).
        - `args`: passed to the field.
        - `key`: the Brownian motion's, for an SDE block (required); ignored
            otherwise, and accepted so that the block fits `eqx.nn.Sequential`.

        **Returns:** the state at `t1`.
        """
        if self.diffusion is None:
            key = None
        elif key is None:
            raise ValueError(
                "An ODEBlock with `diffusion` draws a Brownian motion at every call: "
                "pass `key=` (a fresh one per training step; `nde.train.fit` gives "
                "one to a loss that takes `key`)."
            )
        return solve(
            self.field,
            y,
            t0=self.t0,
            t1=self.t1,
            steps=self.steps,
            dt0=self.dt0,
            solver=self.solver,
            gradient=self.gradient,
            args=args,
            rtol=self.rtol,
            atol=self.atol,
            batched=self.batched,
            diffusion=self.diffusion,
            calculus=self.calculus,
            key=key,
        )
