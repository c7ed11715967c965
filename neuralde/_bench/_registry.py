"""The fields of the benchmark grid, built from the grid's `width`, `layers` and
`dtype`: every field of `neuralde.fields` that defines `example`, and the operator
fields on the convolution and the graph gradient; and the name checks of the grid's
other axes."""

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from .. import fields, operators
from .._examples import example_fields, summary
from .._solvers import SOLVER_NAMES
from ..gradients import GRADIENT_NAMES
from ..operators import Graph


# Image side of the convolutional variants and nodes per side of the graph
# variant's periodic grid: fixed, so that the grid's `width` (channels, features)
# is the one size to vary.
IMAGE = 8
GRID = 6


class FieldSpec(NamedTuple):
    """How to benchmark one field.

    - `make`: `make(width, layers=, dtype=, key=)` returns the field. Its state has
        shape `field.state_shape()`, from `field.initial_state`.
    - `two_stream`: whether the field is an `AbstractTwoStreamField`, so that
        `symplectic_euler` and `leapfrog` apply.
    - `about`: one line for the report.
    """

    make: Callable[..., fields.AbstractField]
    two_stream: bool
    about: str


def _with_bias(field, key):
    """The field with a small random bias: with the default zero bias its gradient
    would not be checked, nor the choice of layer at each time."""
    if not isinstance(field, fields.AbstractOperatorField):
        return field
    bias = 0.1 * jr.normal(key, field.bias.shape, field.bias.dtype)
    return eqx.tree_at(lambda f: f.bias, field, bias)


def _example(cls):
    def make(width, *, layers, dtype, key):
        fkey, bkey = jr.split(key)
        field = cls.example(width, layers=layers, dtype=dtype, key=fkey)
        return _with_bias(field, bkey)

    return make


def _on_operator(cls, operator):
    """`cls` on the operator `operator(width, dtype=, key=)`, stacked over layers."""

    def make(width, *, layers, dtype, key):
        okey, bkey = jr.split(key)
        stacked = operators.stack(
            lambda k: operator(width, dtype=dtype, key=k), layers=layers, key=okey
        )
        return _with_bias(cls(operator=stacked, layers=layers), bkey)

    return make


def _conv(width, *, dtype, key):
    return operators.Conv(width, width, 3, shape=(IMAGE, IMAGE), dtype=dtype, key=key)


def _graph_gradient(width, *, dtype, key):
    return operators.GraphGradient(
        Graph.torus(GRID), width, width, dtype=dtype, key=key
    )


_CONV = f"on a 3x3 circular convolution, width channels, {IMAGE}x{IMAGE} images"
_GRAPH = f"on the graph gradient of the {GRID}x{GRID} periodic grid graph"


def bench_fields() -> dict[str, FieldSpec]:
    """The fields of the grid, by name: every field of `neuralde.fields` that
    defines `example`, then the operator fields on the other operators."""
    return {
        name: FieldSpec(
            _example(cls), issubclass(cls, fields.AbstractTwoStreamField), summary(cls)
        )
        for name, cls in example_fields().items()
    } | {
        # The operator fields on the other operators: their constructors take any K.
        "ConvParabolic": FieldSpec(
            _on_operator(fields.Parabolic, _conv), False, f"Parabolic {_CONV}"
        ),
        "ConvHamiltonian": FieldSpec(
            _on_operator(fields.Hamiltonian, _conv), True, f"Hamiltonian {_CONV}"
        ),
        "GraphParabolic": FieldSpec(
            _on_operator(fields.Parabolic, _graph_gradient),
            False,
            f"Parabolic {_GRAPH} (graph diffusion)",
        ),
    }


FIELDS = bench_fields()

DTYPES = ("float32", "bfloat16", "float16", "float64")
# How the batch reaches `solve`: `jax.vmap` over one example, or the whole batch.
BATCHINGS = ("vmap", "batched")
ADAPTIVE = "adaptive"


def _lookup(kind: str, name, valid) -> str:
    """The valid name matching `name` (case ignored), or a `ValueError` listing the
    valid ones."""
    if isinstance(name, str):
        for v in valid:
            if v.lower() == name.lower():
                return v
    raise ValueError(f"Unknown {kind} {name!r}. Use one of {', '.join(valid)}.")


def field_name(name: str) -> str:
    return _lookup("field", name, FIELDS)


def solver_name(name: str) -> str:
    return _lookup("solver", name, SOLVER_NAMES)


def gradient_name(name: str) -> str:
    return _lookup("gradient", name, GRADIENT_NAMES)


def batching_name(name: str) -> str:
    return _lookup("batching", name, BATCHINGS)


def dtype_name(name: str) -> str:
    return _lookup("dtype", name, DTYPES)


def make_problem(
    name: str, width: int, batch: int, layers: int, dtype: str, *, key: PRNGKeyArray
):
    """The field and the batch of initial states of one problem."""
    fkey, ykey = jr.split(key)
    field = FIELDS[name].make(width, layers=layers, dtype=jnp.dtype(dtype), key=fkey)
    y = jr.normal(ykey, (batch, *field.state_shape()), jnp.dtype(dtype))
    return field, field.initial_state(y)
