"""The one list of fields that the benchmark and the study are built from: a field
defines `example` in its own file, and both pick it up."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import neuralde as nde
from neuralde import _examples
from neuralde._bench import _registry
from neuralde._study import _models


BUILT_IN = {
    "Antisymmetric",
    "Attention",
    "GRAND",
    "GraphCON",
    "Hamiltonian",
    "Hyperbolic",
    "MLP",
    "Parabolic",
}


def test_every_built_in_field_defines_an_example():
    assert set(_examples.example_fields()) == BUILT_IN


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_examples_integrate_from_their_initial_state(name):
    cls = _examples.example_fields()[name]
    field = cls.example(4, layers=2, key=jr.PRNGKey(0))
    assert isinstance(field, cls) and field.layers == 2
    y = jr.normal(jr.PRNGKey(1), field.state_shape())
    y0 = field.initial_state(y)
    y1 = nde.solve(field, y0, steps=4, solver="rk4")
    assert jax.tree.structure(y1) == jax.tree.structure(y0)
    assert all(jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(y1))
    # A batch of features starts a batch of states, which `solve` batches by shape.
    batch = field.initial_state(jnp.stack([y, 2 * y]))
    y1s = nde.solve(field, batch, steps=4, solver="rk4")
    first = jax.tree.map(lambda a: a[0], y1s)
    assert jax.tree.all(jax.tree.map(jnp.allclose, first, y1))


def test_two_stream_fields_start_at_rest():
    field = nde.fields.Hyperbolic.example(3, key=jr.PRNGKey(0))
    y = jnp.arange(3.0)
    position, velocity = field.initial_state(y)
    assert jnp.array_equal(position, y) and jnp.array_equal(velocity, jnp.zeros(3))
    mlp = nde.fields.MLP.example(3, key=jr.PRNGKey(0))
    assert mlp.initial_state(y) is y


def test_a_field_without_an_example_says_so():
    class Plain(nde.fields.AbstractField):
        layers: int = 1
        t1: float = 1.0

        def __call__(self, t, y, args):
            return -y

    with pytest.raises(NotImplementedError, match="Plain does not define `example`"):
        Plain.example(3, key=jr.PRNGKey(0))


class Decay(nde.fields.AbstractOperatorField):
    """Linear decay, $F(t, y) = -\\sigma(K y + b)$."""

    operator: nde.operators.AbstractOperator
    bias: jax.Array
    activation = staticmethod(jnp.tanh)
    layers: int = eqx.field(static=True)
    t1: float = eqx.field(static=True)

    def __init__(self, in_size, *, layers=1, t1=1.0, dtype=None, key):
        self.operator = nde.operators.stack(
            lambda k: nde.operators.Dense(in_size, in_size, dtype=dtype, key=k),
            layers=layers,
            key=key,
        )
        self.bias = jnp.zeros((layers, in_size), dtype)
        self.layers, self.t1 = layers, t1

    @classmethod
    def example(cls, in_size, *, width_size=None, layers=1, t1=1.0, dtype=None, key):
        return cls(in_size, layers=layers, t1=t1, dtype=dtype, key=key)

    def __call__(self, t, y, args):
        return -self.preactivation(t, y)[1]


def test_a_new_field_joins_the_bench_and_the_study_by_its_export(monkeypatch):
    """Exporting a field that defines `example` is all it takes: the registries of
    the bench and the study are derived from `neuralde.fields`."""
    monkeypatch.setattr(nde.fields, "Decay", Decay, raising=False)
    assert "Decay" in _examples.example_fields()

    fields = _registry.bench_fields()
    monkeypatch.setattr(_registry, "FIELDS", fields)
    field, y0 = _registry.make_problem("Decay", 3, 5, 2, "float32", key=jr.PRNGKey(0))
    assert isinstance(field, Decay) and y0.shape == (5, 3)
    assert not fields["Decay"].two_stream
    assert fields["Decay"].about == "Linear decay, $F(t, y) = -\\sigma(K y + b)$."

    # The study's architectures: fields on vectors, with the study's defaults.
    arch = _models.architectures()["Decay"]
    assert (arch.solver, arch.t1, arch.second_stream) == ("euler", 4.0, None)
    model = _models.Classifier(
        arch, dim=3, width=5, layers=2, steps=2, t1=1.0, classes=2, key=jr.PRNGKey(1)
    )
    assert model(jnp.array([0.5, -0.5])).shape == (2,)


def test_the_bench_and_the_study_are_built_from_the_examples():
    examples = _examples.example_fields()
    assert set(examples) <= set(_registry.FIELDS)
    # The other bench entries are the operator fields on other operators.
    assert set(_registry.FIELDS) - set(examples) == {
        "ConvParabolic",
        "ConvHamiltonian",
        "GraphParabolic",
    }
    for name, spec in _registry.FIELDS.items():
        if name in examples:
            is_two = issubclass(examples[name], nde.fields.AbstractTwoStreamField)
            assert spec.two_stream == is_two
    # The study takes those on vectors: not the graph and sequence fields.
    assert set(_models.ARCHITECTURES) == {
        "Antisymmetric",
        "Hamiltonian",
        "Hyperbolic",
        "MLP",
        "Parabolic",
    }
    assert _models.ARCHITECTURES["Hyperbolic"].second_stream == "rest"
    assert _models.ARCHITECTURES["Hamiltonian"].solver == "symplectic_euler"
    assert _models.ARCHITECTURES["Parabolic"].t1 == 2.0
