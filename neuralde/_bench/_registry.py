"""The fields of the benchmark grid: one entry per field, built from the grid's
`width`, `layers` and `dtype`; and the name checks of the grid's other axes."""

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import PRNGKeyArray, PyTree

from .. import fields, operators
from .._solvers import SOLVER_NAMES
from ..gradients import GRADIENT_NAMES
from ..operators import Graph


# Image side of the convolutional variants, nodes per side of the graph variants'
# periodic grid, and sequence length and heads of the attention field: fixed, so
# that the grid's `width` (channels, features, model size) is the one size to vary.
IMAGE = 8
GRID = 6
SEQ_LEN = 8
HEADS = 2


class FieldSpec(NamedTuple):
    """How to benchmark one field.

    - `make`: `make(width, layers=, dtype=, key=)` returns the field.
    - `state`: `state(batch, width, dtype=, key=)` returns a batch of initial states
        (a leading batch axis on every leaf).
    - `two_stream`: whether the field is an `AbstractTwoStreamField`, so that
        `symplectic_euler` and `leapfrog` apply.
    - `about`: one line for the report.
    """

    make: Callable[..., fields.AbstractField]
    state: Callable[..., PyTree]
    two_stream: bool
    about: str


def _with_bias(field, key):
    """The field with a small random bias: with the default zero bias its gradient
    would not be checked, nor the choice of layer at each time."""
    bias = 0.1 * jr.normal(key, field.bias.shape, field.bias.dtype)
    return eqx.tree_at(lambda f: f.bias, field, bias)


def _dense(cls, two_operator=False):
    def make(width, *, layers, dtype, key):
        fkey, bkey = jr.split(key)
        sizes = (width, width) if two_operator else (width,)
        field = cls(*sizes, layers=layers, dtype=dtype, key=fkey)
        return _with_bias(field, bkey)

    return make


def _vectors(shape_of):
    def state(batch, width, *, dtype, key):
        return jr.normal(key, (batch, *shape_of(width)), dtype)

    return state


def _two_streams(one):
    """`(y, 0)`: the second stream starts at zero, as for the study's networks."""

    def state(batch, width, *, dtype, key):
        y = one(batch, width, dtype=dtype, key=key)
        return y, jnp.zeros_like(y)

    return state


def _conv(cls):
    def make(width, *, layers, dtype, key):
        okey, bkey = jr.split(key)

        def conv(k):
            return operators.Conv(
                width, width, 3, shape=(IMAGE, IMAGE), dtype=dtype, key=k
            )

        operator = operators.stack(conv, layers=layers, key=okey)
        return _with_bias(cls(operator=operator, layers=layers), bkey)

    return make


def torus(side: int) -> Graph:
    """The periodic `side x side` grid graph: four neighbours per node, both
    directions of every edge."""
    i, j = np.divmod(np.arange(side * side), side)
    senders, receivers = [], []
    for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        senders.append(((i + di) % side) * side + (j + dj) % side)
        receivers.append(i * side + j)
    return Graph(np.concatenate(senders), np.concatenate(receivers), side * side)


def _graph_parabolic(width, *, layers, dtype, key):
    okey, bkey = jr.split(key)
    graph = torus(GRID)

    def gradient(k):
        return operators.GraphGradient(graph, width, width, dtype=dtype, key=k)

    operator = operators.stack(gradient, layers=layers, key=okey)
    return _with_bias(fields.Parabolic(operator=operator, layers=layers), bkey)


def _grand(width, *, layers, dtype, key):
    return fields.GRAND(torus(GRID), width, layers=layers, dtype=dtype, key=key)


def _graphcon(width, *, layers, dtype, key):
    return fields.GraphCON(torus(GRID), width, layers=layers, dtype=dtype, key=key)


def _attention(width, *, layers, dtype, key):
    return fields.Attention(
        width, HEADS, seq_len=SEQ_LEN, layers=layers, dtype=dtype, key=key
    )


_flat = _vectors(lambda w: (w,))
_image = _vectors(lambda w: (w, IMAGE, IMAGE))
_nodes = _vectors(lambda w: (GRID * GRID, w))
_sequence = _vectors(lambda w: (SEQ_LEN, w))

FIELDS: dict[str, FieldSpec] = {
    "MLP": FieldSpec(
        _dense(fields.MLP), _flat, False, "sigma(K y + b), dense K: the plain ODE"
    ),
    "Antisymmetric": FieldSpec(
        _dense(fields.Antisymmetric),
        _flat,
        False,
        "sigma((K - K^T - gamma I) y + b), dense K",
    ),
    "Hamiltonian": FieldSpec(
        _dense(fields.Hamiltonian, two_operator=True),
        _two_streams(_flat),
        True,
        "y' = K^T sigma(K z + b), z' = -K^T sigma(K y + b), dense square K",
    ),
    "Hyperbolic": FieldSpec(
        _dense(fields.Hyperbolic, two_operator=True),
        _two_streams(_flat),
        True,
        "y'' = -K^T sigma(K y + b), dense square K; state (position, velocity)",
    ),
    "Parabolic": FieldSpec(
        _dense(fields.Parabolic, two_operator=True),
        _flat,
        False,
        "-K^T sigma(K y + b), dense square K",
    ),
    "ConvParabolic": FieldSpec(
        _conv(fields.Parabolic),
        _image,
        False,
        f"Parabolic on a 3x3 circular convolution, width channels, "
        f"{IMAGE}x{IMAGE} images",
    ),
    "ConvHamiltonian": FieldSpec(
        _conv(fields.Hamiltonian),
        _two_streams(_image),
        True,
        f"Hamiltonian on a 3x3 circular convolution, width channels, "
        f"{IMAGE}x{IMAGE} images",
    ),
    "GraphParabolic": FieldSpec(
        _graph_parabolic,
        _nodes,
        False,
        f"Parabolic on the graph gradient (graph diffusion), {GRID}x{GRID} periodic "
        "grid graph, width features per node",
    ),
    "GRAND": FieldSpec(
        _grand,
        _nodes,
        False,
        f"attention-weighted graph diffusion, {GRID}x{GRID} periodic grid graph",
    ),
    "GraphCON": FieldSpec(
        _graphcon,
        _two_streams(_nodes),
        False,
        f"graph-coupled oscillators, {GRID}x{GRID} periodic grid graph",
    ),
    "Attention": FieldSpec(
        _attention,
        _sequence,
        False,
        f"pre-LN self-attention + feed-forward, {SEQ_LEN} positions, {HEADS} heads",
    ),
}

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
    spec = FIELDS[name]
    fkey, ykey = jr.split(key)
    field = spec.make(width, layers=layers, dtype=jnp.dtype(dtype), key=fkey)
    y0 = spec.state(batch, width, dtype=jnp.dtype(dtype), key=ykey)
    return field, y0
