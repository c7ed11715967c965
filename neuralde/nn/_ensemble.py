import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._checks import positive_int


class Ensemble(eqx.Module):
    """The mean of a stochastic model's output over `samples` draws of its noise:
    the Feynman–Kac prediction of a neural SDE (Wang et al. 2018; Liu et al.
    2019), $\\mathbb E_W[f(x, W)] \\approx \\frac1S \\sum_s f(x, W_s)$.

    `model(x, key=key)` is called with `samples` keys split from the call's `key`,
    under `jax.vmap`. To average probabilities rather than logits, end the model with
    a softmax.
    """

    model: eqx.Module
    samples: int = eqx.field(static=True)

    def __init__(self, model: eqx.Module, samples: int):
        """**Arguments:** the stochastic model, called as `model(x, key=key)`, and
        the number of noise samples to average."""
        self.model = model
        self.samples = positive_int(samples, "samples")

    def __call__(self, x: PyTree[Array], *, key: PRNGKeyArray) -> PyTree[Array]:
        """The mean output over `samples` draws, from `key` (required)."""
        if key is None:
            raise ValueError("`Ensemble` needs a `key=` to draw its samples.")
        outputs = jax.vmap(lambda k: self.model(x, key=k))(jr.split(key, self.samples))
        return jax.tree.map(lambda o: jnp.mean(o, axis=0), outputs)
