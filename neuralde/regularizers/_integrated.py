"""Penalties integrated alongside the state: the RNODE regularisers of Finlay et al.
(2020), $\\int \\|F\\|^2 dt$ and $\\int \\|\\partial F / \\partial y\\|_F^2 dt$."""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
from jaxtyping import Array, PRNGKeyArray, PyTree, Scalar

from .._checks import positive_int


class AbstractRegularizer(eqx.Module):
    """A running cost $\\int_{t_0}^{t_1} r(t, y)\\, dt$ that `solve` integrates as an
    extra component of the state, so that it is differentiated by whichever gradient
    mode the solve uses (the continuous adjoint included)."""

    needs_key: eqx.AbstractClassVar[bool]

    def noise(self, key: PRNGKeyArray | None, y0: PyTree[Array]) -> PyTree[Array]:
        """Random draws made once per solve (none by default)."""
        return None

    @abc.abstractmethod
    def rate(self, f: PyTree[Array], jvp, noise: PyTree[Array]) -> Scalar:
        """$r(t, y)$, given $f = F(t, y)$ and `jvp`, the map
        $v \\mapsto \\partial F/\\partial y\\, v$ at $(t, y)$."""


class KineticEnergy(AbstractRegularizer):
    """$\\int \\|F(t, y)\\|^2 dt$: the kinetic energy of the flow (Finlay et al. 2020).

    Penalising it favours straight trajectories at constant speed, which adaptive
    solvers integrate in few steps.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{finlay2020train,
            title={How to train your neural {ODE}: the world of {J}acobian and kinetic
                   regularization},
            author={Finlay, Chris and Jacobsen, J{\\"o}rn-Henrik and Nurbekyan, Levon
                    and Oberman, Adam},
            booktitle={International Conference on Machine Learning},
            year={2020}
        }
        ```
    """

    needs_key = False

    def rate(self, f, jvp, noise):
        return sum(jnp.sum(x**2) for x in jtu.tree_leaves(f))


class JacobianFrobenius(AbstractRegularizer):
    """$\\int \\|\\partial F/\\partial y\\|_F^2 dt$, by Hutchinson's estimator
    $\\|J\\|_F^2 = \\mathbb E\\,\\|J\\varepsilon\\|^2$, $\\varepsilon \\sim
    \\mathcal N(0, I)$, with one Jacobian-vector product per sample (Finlay et al.
    2020).

    The samples are drawn once per solve from the `key` given to `solve`, and held
    fixed along the trajectory, so the estimate is unbiased and the integrand smooth.
    """

    samples: int = eqx.field(static=True)
    needs_key = True

    def __init__(self, samples: int = 1):
        """**Arguments:**

        - `samples`: the number of Hutchinson samples. Default 1, as in the paper:
            the noise averages out over a training run.
        """
        samples = positive_int(samples, "samples")
        self.samples = samples

    def noise(self, key, y0):
        leaves, treedef = jtu.tree_flatten(y0)
        keys = jr.split(key, len(leaves))
        draws = [
            jr.normal(k, (self.samples, *jnp.shape(x)), jnp.result_type(x))
            for k, x in zip(keys, leaves)
        ]
        return jtu.tree_unflatten(treedef, draws)

    def rate(self, f, jvp, noise):
        def one(eps):
            return sum(jnp.sum(x**2) for x in jtu.tree_leaves(jvp(eps)))

        return jnp.mean(jax.vmap(one)(noise))


class Augmented(eqx.Module):
    """The field on the state `(y, p)`, where `p` holds the running penalties."""

    field: Callable
    penalties: tuple[AbstractRegularizer, ...]
    noise: tuple[PyTree[Array], ...]

    def __call__(self, t, state, args):
        y, _ = state
        f, jvp = jax.linearize(lambda y_: self.field(t, y_, args), y)
        rates = [p.rate(f, jvp, n) for p, n in zip(self.penalties, self.noise)]
        dtype = jnp.result_type(*jtu.tree_leaves(y))
        return f, jnp.stack(rates).astype(dtype)


def augment(field, y0, penalties, key):
    """The augmented field and initial state for `penalties`."""
    penalties = tuple(penalties)
    for p in penalties:
        if not isinstance(p, AbstractRegularizer):
            raise TypeError(
                "`regularizers` must be `neuralde.regularizers` penalties such as "
                f"`KineticEnergy()` or `JacobianFrobenius()`, got {type(p).__name__}."
            )
    stochastic = [p for p in penalties if p.needs_key]
    if stochastic and key is None:
        raise ValueError(
            f"{type(stochastic[0]).__name__} draws random samples: pass `key=` to "
            "`solve`, a fresh one per training step."
        )
    keys = jr.split(key, len(penalties)) if key is not None else [None] * len(penalties)
    noise = tuple(p.noise(k, y0) for p, k in zip(penalties, keys))
    dtype = jnp.result_type(*jtu.tree_leaves(y0))
    p0 = jnp.zeros(len(penalties), dtype)
    return Augmented(field, penalties, noise), (y0, p0)
