import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Int, PRNGKeyArray, PyTree, Shaped

from .._checks import positive_int
from ..operators import AbstractOperator, Dense, stack
from ._potential import potential_of


Activation = Callable[[Array], Array]


class AbstractField(eqx.Module):
    """Base class of neuralde's vector fields $F_\\theta(t, y)$.

    A field is a pure function `__call__(t, y, args)` that returns a PyTree shaped
    like `y`: diffrax's vector-field signature. Its parameters are piecewise constant
    in time over `layers` equal intervals of `[0, t1]`, stacked on a leading layer
    axis. Layer `k` owns the half-open interval `[k t1/layers, (k+1) t1/layers)`;
    times before `0` or after `t1` use the first or last layer.

    Subclasses provide `layers`, `t1` and `__call__`, and use `self.layer(t)` to
    pick the parameters of time `t`.
    """

    layers: eqx.AbstractVar[int]
    t1: eqx.AbstractVar[float]

    def layer(self, t: ArrayLike) -> Int[Array, ""]:
        """The index of the layer whose parameters act at time `t`."""
        return layer_index(t, self.layers, self.t1)

    def state_shape(self) -> tuple[int, ...] | None:
        """The shape of one example's state (of each stream, for two-stream
        fields), or `None` if the field does not fix it. `neuralde.solve` takes a
        state with one more leading axis as a batch."""
        return None

    def initial_state(self, y: PyTree[Array]) -> PyTree[Array]:
        """The state that starts from the features `y` of an example (or of a
        batch): `y` itself. Fields on a position and a velocity return `(y, 0)`."""
        return y

    @classmethod
    def example(
        cls,
        in_size: int,
        *,
        width_size: int | None = None,
        layers: int = 1,
        t1: float = 1.0,
        dtype=None,
        key: PRNGKeyArray,
    ) -> "AbstractField":
        """A standard instance of this field for examples of `in_size` features, its
        other choices (graph, heads, sequence length) fixed.

        `neuralde bench` benchmarks every field of `neuralde.fields` that defines
        it, and `neuralde study` studies those whose state is a vector: a new field
        needs nothing else to join them.

        - `width_size`: the hidden width, for fields that have one (default
            `in_size`).
        - `layers`, `t1`, `dtype`, `key`: as for the constructor.
        """
        raise NotImplementedError(
            f"{cls.__name__} does not define `example`, so the benchmark and the "
            "study do not know how to build it."
        )

    @abc.abstractmethod
    def __call__(self, t: ArrayLike, y: PyTree[Array], args: PyTree) -> PyTree[Array]:
        """**Arguments:**

        - `t`: the time.
        - `y`: the state of one example (`neuralde.solve` batches it).
        - `args`: passed through by `solve`; the built-in fields ignore it.

        **Returns:** $F_\\theta(t, y)$, a PyTree shaped like `y`.
        """


class AbstractTwoStreamField(AbstractField):
    """A field on two streams $(y, z)$ whose rates each depend on the other stream
    only: $\\dot y = f(t, z)$, $\\dot z = g(t, y)$.

    This is the structure that symplectic Euler and leapfrog exploit, and that makes
    their steps algebraically reversible. Subclasses implement `dy` and `dz`; the
    state is the tuple `(y, z)`.
    """

    @abc.abstractmethod
    def dy(self, t: ArrayLike, z: PyTree[Array], args: PyTree) -> PyTree[Array]:
        """The rate of the first stream, as a function of the second."""

    @abc.abstractmethod
    def dz(self, t: ArrayLike, y: PyTree[Array], args: PyTree) -> PyTree[Array]:
        """The rate of the second stream, as a function of the first."""

    def initial_state(self, y):
        """`(y, 0)`: the second stream starts at rest."""
        return y, jax.tree.map(jnp.zeros_like, y)

    def __call__(self, t, y, args):
        check_two_streams(type(self).__name__, y)
        y_, z_ = y
        return self.dy(t, z_, args), self.dz(t, y_, args)


class AbstractConservativeField(AbstractTwoStreamField):
    """A two-stream field whose flow conserves an energy $E(t, (y, z))$ while its
    parameters are constant in time (`layers=1`). `neuralde.stability.energy` and
    `energy_drift` ask the field for it: a new conservative field implements
    `energy` and nothing else needs to know it."""

    @abc.abstractmethod
    def energy(
        self,
        t: ArrayLike,
        y: tuple[Array, Array],
        *,
        potential: Callable[[Array], Array] | None = None,
    ) -> Array:
        """The energy of the state `y = (y, z)` with the parameters of time `t`.
        `potential` is $\\Sigma$, the antiderivative of the activation, where the
        energy needs one (default: known for `jnp.tanh`, `jax.nn.relu`,
        `jax.nn.identity`)."""


def layer_index(t: ArrayLike, layers: int, t1: float) -> Int[Array, ""]:
    """Index of the layer acting at time `t`, for `layers` equal intervals of
    `[0, t1]`.

    A time within a few ulps below a boundary counts as the later layer, so that
    step times such as `3 * (0.1)` land on the layer they were meant for.
    """
    t = jnp.asarray(t)
    # At least float32: in half precision the allowance below would span layers.
    t = t.astype(jnp.promote_types(t.dtype, jnp.float32))
    if layers == 1:
        return jnp.zeros((), jnp.int32)
    s = t * (layers / t1)
    # s has magnitude up to `layers`, so its round-off is about eps * layers.
    allowance = min(16 * float(jnp.finfo(t.dtype).eps) * layers, 0.01)
    k = jnp.floor(s + allowance).astype(jnp.int32)
    return jnp.clip(k, 0, layers - 1)


def check_layers(layers: int, t1: float) -> None:
    positive_int(layers, "layers")
    if not t1 > 0:
        raise ValueError(f"`t1` must be positive, got {t1!r}.")


def check_two_streams(name: str, y) -> None:
    if not (isinstance(y, tuple) and len(y) == 2):
        raise TypeError(
            f"{name} is a two-stream field: its state is a tuple `(y, z)` of two "
            f"arrays, but got {_describe(y)}. Pass `(y0, z0)`, e.g. "
            "`(y0, jnp.zeros_like(y0))`."
        )


def check_activation(name: str, activation) -> None:
    if not callable(activation):
        raise TypeError(
            f"{name}: `activation` must be a function applied elementwise, such as "
            f"`jnp.tanh` or `jax.nn.relu`, got {activation!r}."
        )


def check_shape(name: str, y: Shaped[Array, "..."], shape: tuple[int, ...]) -> None:
    """Trace-time check that one example's state has the expected shape."""
    if isinstance(y, tuple | list | dict):
        raise TypeError(
            f"{name} takes a single array of shape {shape}, but got {_describe(y)}."
        )
    if jnp.shape(y) != shape:
        hint = ""
        if jnp.ndim(y) == len(shape) + 1 and jnp.shape(y)[1:] == shape:
            hint = (
                " Fields act on one example: `neuralde.solve` takes a batch by "
                "shape; elsewhere batch with `jax.vmap`."
            )
        raise ValueError(
            f"{name} expects a state of shape {shape}, but got shape "
            f"{jnp.shape(y)}.{hint}"
        )


def _describe(y) -> str:
    if isinstance(y, tuple | list):
        return f"a {type(y).__name__} of length {len(y)}"
    if hasattr(y, "shape"):
        return f"an array of shape {tuple(y.shape)}"
    return f"a {type(y).__name__}"


class AbstractOperatorField(AbstractField):
    """A field built from a linear operator $K$ and a bias $b$, both stacked over
    layers: the shared machinery of the stable fields."""

    operator: eqx.AbstractVar[AbstractOperator]
    bias: eqx.AbstractVar[Array]
    activation: eqx.AbstractVar[Activation]

    def __check_init__(self):
        check_activation(type(self).__name__, self.activation)

    def state_shape(self) -> tuple[int, ...]:
        """The shape of one example's state (one stream, for two-stream fields)."""
        return self.operator.in_structure().shape

    def preactivation(self, t, y) -> tuple[AbstractOperator, Array]:
        """$(K_k, \\sigma(K_k y + b_k))$ for the layer $k$ of time `t`."""
        k = self.layer(t)
        operator = self.operator.at_layer(k)
        return operator, self.activation(operator(y) + self.bias[k])

    def potential_energy(self, t, y, potential=None) -> Array:
        """$\\mathbf 1^\\top \\Sigma(K_k y + b_k)$ with $\\Sigma' = \\sigma$, for the
        layer $k$ of time `t`: the energy of a state under the fields' rate
        $-K^\\top \\sigma(K y + b)$."""
        sigma = potential_of(self.activation, potential)
        k = self.layer(t)
        return jnp.sum(sigma(self.operator.at_layer(k)(y) + self.bias[k]))


def init_operator(
    operator: AbstractOperator | None,
    in_size: int | None,
    out_size: int | None,
    *,
    square: bool,
    layers: int,
    t1: float,
    dtype,
    key: PRNGKeyArray | None,
    name: str,
) -> tuple[AbstractOperator, Array]:
    """The operator and zero bias of a field, both stacked over `layers`.

    With `operator=None` this is a `Dense` operator, drawn independently per layer.
    """
    check_layers(layers, t1)
    if operator is None:
        if in_size is None or (out_size is None and not square):
            raise TypeError(f"{name} needs its sizes, or an `operator=`.")
        if key is None:
            raise TypeError(f"{name} needs a PRNG `key=` to initialise its operator.")
        out_size = in_size if square else out_size
        for size in (in_size, out_size):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(
                    f"{name}: sizes must be positive integers, got "
                    f"{in_size!r} and {out_size!r} (a zero-sized operator would make "
                    "the field the zero map)."
                )
        make = lambda k: Dense(in_size, out_size, dtype=dtype, key=k)  # noqa: E731
        operator = stack(make, layers=layers, key=key)
    elif not isinstance(operator, AbstractOperator):
        raise TypeError(
            f"{name}: `operator` must be a `neuralde.operators.AbstractOperator`, got "
            f"{type(operator).__name__}."
        )
    elif operator.num_layers() != layers:
        raise ValueError(
            f"{name}: the operator's parameters are stacked over "
            f"{operator.num_layers()} layers, but `layers={layers}`."
        )
    in_struct = operator.in_structure()
    out_struct = jax.eval_shape(operator.at_layer(0), in_struct)
    if out_struct.ndim == 0:
        raise ValueError(
            f"{name}: one layer of the operator maps to a scalar, so its parameters "
            "look unstacked. Stack one operator per layer with "
            "`neuralde.operators.stack`, e.g. `stack(lambda k: Dense(n, m, "
            "key=k), layers=layers, key=key)`."
        )
    if square and out_struct.shape != in_struct.shape:
        raise ValueError(
            f"{name} needs a square operator (input and output of one shape), got "
            f"{in_struct.shape} -> {out_struct.shape}."
        )
    if in_size is not None and in_struct.shape != (in_size,):
        raise ValueError(
            f"{name}: the operator acts on shape {in_struct.shape}, not ({in_size},)."
        )
    bias_shape = operator.at_layer(0).bias_shape()
    bias = jnp.zeros((layers, *bias_shape), out_struct.dtype)
    return operator, bias
