"""The architectures of the study, and the classifier built around each: a learned
linear lift of the 2-D input, the network (a field and its solver), and a linear
read-out."""

from collections.abc import Callable
from typing import Literal, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .. import fields
from .._solve import solve


# The study runs in float32 whatever `jax_enable_x64` says, so that its results do not
# depend on the caller's JAX configuration.
DTYPE = jnp.float32


class Architecture(NamedTuple):
    """How to build one architecture of the study.

    - `make`: `make(dim, width, layers=, t1=, key=)` returns the field.
    - `solver`: the solver name for `neuralde.solve`.
    - `t1`: the default final time, the same for every depth: more layers refine the
        time grid of one continuous model, with step `t1 / steps`.
    - `second_stream`: for two-stream fields, how the second stream starts:
        `"lift"` (a second learned lift of the input) or `"zeros"`.
    - `about`: one line for the report.
    """

    make: Callable[..., fields.AbstractField]
    solver: str
    t1: float
    second_stream: Literal["lift", "zeros"] | None
    about: str


def _mlp(dim, width, *, layers, t1, key):
    return fields.MLP(dim, layers=layers, t1=t1, dtype=DTYPE, key=key)


def _antisymmetric(dim, width, *, layers, t1, key):
    return fields.Antisymmetric(dim, layers=layers, t1=t1, dtype=DTYPE, key=key)


def _two_operator(cls):
    def make(dim, width, *, layers, t1, key):
        return cls(dim, width, layers=layers, t1=t1, dtype=DTYPE, key=key)

    return make


ARCHITECTURES: dict[str, Architecture] = {
    "MLP": Architecture(
        _mlp, "euler", 4.0, None, "sigma(K y + b), explicit Euler: the plain ResNet"
    ),
    "Antisymmetric": Architecture(
        _antisymmetric,
        "euler",
        4.0,
        None,
        "sigma((K - K^T - 0.01 I) y + b), explicit Euler",
    ),
    # With z0 = 0 the first symplectic Euler step would move y by an amount that does
    # not depend on the input (docs/concepts.md); z0 is lifted from the input instead.
    "Hamiltonian": Architecture(
        _two_operator(fields.Hamiltonian),
        "symplectic_euler",
        4.0,
        "lift",
        "y' = K^T sigma(K z + b), z' = -K^T sigma(K y + b), symplectic Euler, "
        "(y0, z0) both lifted from the input",
    ),
    # v0 = 0 is the hyperbolic network's y_{-1} = y_0 (Haber & Ruthotto 2017); the
    # first leapfrog half-kick already depends on the input.
    "Hyperbolic": Architecture(
        _two_operator(fields.Hyperbolic),
        "leapfrog",
        4.0,
        "zeros",
        "y'' = -K^T sigma(K y + b), leapfrog, v0 = 0",
    ),
    # Its flow contracts: over [0, 4] training often collapsed every point to one
    # state (M ~ 1e-4, chance accuracy; 3 of 4 runs at depths 16 and 64, seeds 0 and
    # 1), over [0, 2] none of those 4 did.
    "Parabolic": Architecture(
        _two_operator(fields.Parabolic),
        "euler",
        2.0,
        None,
        "-K^T sigma(K y + b), explicit Euler",
    ),
}


def architecture_name(name: str) -> str:
    """The canonical name of an architecture (case is ignored)."""
    for canonical in ARCHITECTURES:
        if str(name).lower() == canonical.lower():
            return canonical
    raise ValueError(
        f"Unknown architecture {name!r}. Valid architectures: "
        f"{', '.join(ARCHITECTURES)}."
    )


class Classifier(eqx.Module):
    """Lift -> network -> linear read-out, for one 2-D example."""

    lift: eqx.nn.Linear
    field: fields.AbstractField
    head: eqx.nn.Linear
    solver: str = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    second_stream: str | None = eqx.field(static=True)

    def __init__(
        self,
        arch: Architecture,
        *,
        dim: int,
        width: int,
        layers: int,
        steps: int,
        t1: float,
        classes: int,
        key: PRNGKeyArray,
    ):
        lkey, fkey, hkey = jr.split(key, 3)
        lifted = 2 * dim if arch.second_stream == "lift" else dim
        self.lift = eqx.nn.Linear(2, lifted, dtype=DTYPE, key=lkey)
        self.field = arch.make(dim, width, layers=layers, t1=t1, key=fkey)
        self.head = eqx.nn.Linear(dim, classes, dtype=DTYPE, key=hkey)
        self.solver = arch.solver
        self.steps = steps
        self.second_stream = arch.second_stream

    def initial_state(self, x: Float[Array, "2"]) -> PyTree[Array]:
        """The network's input state for the point `x`."""
        h = self.lift(x)
        if self.second_stream == "lift":
            return tuple(jnp.split(h, 2))
        if self.second_stream == "zeros":
            return h, jnp.zeros_like(h)
        return h

    def readout(self, y1: PyTree[Array]) -> Float[Array, " classes"]:
        """The logits of the network's final state (its first stream)."""
        return self.head(y1[0] if self.second_stream else y1)

    def __call__(self, x: Float[Array, "2"]) -> Float[Array, " classes"]:
        y1 = solve(
            self.field, self.initial_state(x), steps=self.steps, solver=self.solver
        )
        return self.readout(y1)
