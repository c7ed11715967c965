"""The architectures of the study, and the classifier built around each: a learned
linear lift of the 2-D input, the network (a field and its solver), and a linear
read-out."""

from typing import Literal, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .. import fields
from .._examples import example_fields, summary
from .._solve import solve


# The study runs in float32 whatever `jax_enable_x64` says, so that its results do not
# depend on the caller's JAX configuration.
DTYPE = jnp.float32


class Architecture(NamedTuple):
    """How to build one architecture of the study.

    - `field`: the field class; the study builds `field.example(dim, width_size=
        width, layers=, t1=, key=)`.
    - `solver`: the solver name for `neuralde.solve`.
    - `t1`: the default final time, the same for every depth: more layers refine the
        time grid of one continuous model, with step `t1 / steps`.
    - `second_stream`: for two-stream fields, how the second stream starts:
        `"lift"` (a second learned lift of the input) or `"rest"` (the field's
        `initial_state`).
    - `about`: one line for the report.
    """

    field: type[fields.AbstractField]
    solver: str
    t1: float
    second_stream: Literal["lift", "rest"] | None
    about: str


# The study's choices for a field it has no entry for below: explicit Euler (the
# ResNet) on one stream; leapfrog on two, the second starting at rest; t1 = 4. For
# Hyperbolic, v0 = 0 is the hyperbolic network's y_{-1} = y_0 (Haber & Ruthotto
# 2017), and the first leapfrog half-kick already depends on the input.
T1 = 4.0
CHOICES = {
    # With z0 = 0 the first symplectic Euler step would move y by an amount that does
    # not depend on the input (docs/concepts.md); z0 is lifted from the input instead.
    "Hamiltonian": dict(solver="symplectic_euler", second_stream="lift"),
    # Its flow contracts: over [0, 4] training often collapsed every point to one
    # state (M ~ 1e-4, chance accuracy; 3 of 4 runs at depths 16 and 64, seeds 0 and
    # 1), over [0, 2] none of those 4 did.
    "Parabolic": dict(t1=2.0),
}


def _architecture(name, cls) -> Architecture:
    two_stream = issubclass(cls, fields.AbstractTwoStreamField)
    choice = dict(
        solver="leapfrog" if two_stream else "euler",
        t1=T1,
        second_stream="rest" if two_stream else None,
    ) | CHOICES.get(name, {})
    about = f"{summary(cls).rstrip('.')}; solver `{choice['solver']}`"
    if choice["second_stream"] == "lift":
        about += ", both streams lifted from the input"
    elif two_stream:
        about += ", the second stream starting at rest"
    return Architecture(cls, about=about, **choice)


def _on_vectors(cls) -> bool:
    """Whether the field's state is one vector (per stream), as the study's
    classifier needs."""
    field = eqx.filter_eval_shape(cls.example, 3, key=jr.PRNGKey(0))
    return field.state_shape() == (3,)


def architectures() -> dict[str, Architecture]:
    """The study's architectures, by name: every field that defines `example` and
    whose state is a vector."""
    return {
        name: _architecture(name, cls)
        for name, cls in example_fields().items()
        if _on_vectors(cls)
    }


ARCHITECTURES = architectures()


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
        self.field = arch.field.example(
            dim, width_size=width, layers=layers, t1=t1, dtype=DTYPE, key=fkey
        )
        self.head = eqx.nn.Linear(dim, classes, dtype=DTYPE, key=hkey)
        self.solver = arch.solver
        self.steps = steps
        self.second_stream = arch.second_stream

    def initial_state(self, x: Float[Array, "2"]) -> PyTree[Array]:
        """The network's input state for the point `x`."""
        h = self.lift(x)
        if self.second_stream == "lift":
            return tuple(jnp.split(h, 2))
        return self.field.initial_state(h)

    def readout(self, y1: PyTree[Array]) -> Float[Array, " classes"]:
        """The logits of the network's final state (its first stream)."""
        return self.head(y1[0] if self.second_stream else y1)

    def __call__(self, x: Float[Array, "2"]) -> Float[Array, " classes"]:
        y1 = solve(
            self.field, self.initial_state(x), steps=self.steps, solver=self.solver
        )
        return self.readout(y1)
