import diffrax as dfx
import equinox as eqx
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._solve import check_gradient, Gradient, solve
from .._solvers import get_solver
from ..fields import AbstractField


class ODEBlock(eqx.Module):
    """A continuous-time block: `y -> solve(field, y, ...)`, the state at `t1`.

    It drops into a model like any layer (for example between the stem and the head
    of a classifier, or in `eqx.nn.Sequential`), and trains under every gradient
    mode of [`neuralde.solve`][]. Like the other layers it acts on one example.

    !!! Example

        ```python
        field = nde.fields.Hamiltonian(dim=16, width=32, layers=8, key=key)
        block = nde.nn.ODEBlock(field, steps=8, solver="leapfrog",
                                gradient="reversible")
        y1, z1 = block((y0, jnp.zeros_like(y0)))
        ```
    """

    field: AbstractField
    t0: float = eqx.field(static=True)
    t1: float | None = eqx.field(static=True)
    steps: int | None = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    solver: str | dfx.AbstractSolver = eqx.field(static=True)
    gradient: Gradient | dfx.AbstractAdjoint = eqx.field(static=True)
    checkpoints: int | None = eqx.field(static=True)
    rtol: float | None = eqx.field(static=True)
    atol: float | None = eqx.field(static=True)
    batched: bool = eqx.field(static=True)

    def __init__(
        self,
        field: AbstractField,
        *,
        t0: float = 0.0,
        t1: float | None = None,
        steps: int | None = None,
        dt0: float | None = None,
        solver: str | dfx.AbstractSolver = "rk4",
        gradient: Gradient | dfx.AbstractAdjoint = "discretize",
        checkpoints: int | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        batched: bool = False,
    ):
        """**Arguments:** the vector field, then the options of
        [`neuralde.solve`][] (keyword only), with the same defaults: `t1=None`
        integrates over the field's own `[0, t1]`. The solver and gradient names are
        checked here; the rest is checked when the block is first called.

        With `batched=True` the block takes a batch of states, as `solve` does.
        """
        get_solver(solver)
        check_gradient(gradient, checkpoints)
        self.field = field
        self.t0 = t0
        self.t1 = t1
        self.steps = steps
        self.dt0 = dt0
        self.solver = solver
        self.gradient = gradient
        self.checkpoints = checkpoints
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

        - `y`: the initial state of one example (a tuple `(y, z)` for two-stream
            fields).
        - `args`: passed to the field.
        - `key`: ignored; accepted so the block fits `eqx.nn.Sequential`.

        **Returns:** the state at `t1`.
        """
        del key
        return solve(
            self.field,
            y,
            t0=self.t0,
            t1=self.t1,
            steps=self.steps,
            dt0=self.dt0,
            solver=self.solver,
            gradient=self.gradient,
            checkpoints=self.checkpoints,
            args=args,
            rtol=self.rtol,
            atol=self.atol,
            batched=self.batched,
        )
