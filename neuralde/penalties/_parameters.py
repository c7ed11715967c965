import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._checks import positive_int


def _leaves(tree: PyTree) -> list[Array]:
    return jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))


def _total(terms: list[Array], leaves: list[Array]) -> Float[Array, ""]:
    if not terms:
        dtype = jnp.result_type(*leaves) if leaves else jnp.result_type(float)
        return jnp.zeros((), jnp.real(jnp.zeros((), dtype)).dtype)
    return sum(terms[1:], terms[0])


def _squared_norm(x: Array) -> Array:
    # |x|^2 of complex entries too.
    return jnp.sum(jnp.real(x * jnp.conj(x)))


def l2(tree: PyTree) -> Float[Array, ""]:
    """The L2 penalty (weight decay), $\\tfrac12 \\sum \\|\\theta\\|^2$ over the
    inexact arrays of `tree`.

    With the factor $\\tfrac12$, the gradient is $\\theta$ itself, so that adding
    $\\lambda\\,$`l2` to a loss is weight decay with coefficient $\\lambda$ under
    SGD. (For Adam, decoupled weight decay, `optax.adamw`, is usually preferred to a
    penalty in the loss.)

    **Arguments:**

    - `tree`: the parameters, any PyTree.

    **Returns:** a scalar; `0.0` for a tree without inexact arrays.
    """
    leaves = _leaves(tree)
    return 0.5 * _total([_squared_norm(x) for x in leaves], leaves)


def l1(tree: PyTree) -> Float[Array, ""]:
    """The L1 penalty, $\\sum |\\theta|$ over the inexact arrays of `tree`, which
    drives parameters to exactly zero (sparsity).

    **Arguments:**

    - `tree`: the parameters, any PyTree.

    **Returns:** a scalar; `0.0` for a tree without inexact arrays.
    """
    leaves = _leaves(tree)
    return _total([jnp.sum(jnp.abs(x)) for x in leaves], leaves)


def elastic_net(tree: PyTree, *, l1_ratio: float = 0.5) -> Float[Array, ""]:
    """The elastic-net penalty, $\\rho\\,\\mathrm{L1} + (1 - \\rho)\\,\\mathrm{L2}$,
    i.e. $\\rho \\sum|\\theta| + \\tfrac{1 - \\rho}{2}\\sum\\|\\theta\\|^2$ (the
    parameterisation of scikit-learn and of Zou & Hastie 2005, without the overall
    strength).

    **Arguments:**

    - `tree`: the parameters, any PyTree.
    - `l1_ratio`: $\\rho \\in [0, 1]$; 1 is `l1`, 0 is `l2`.

    **Returns:** a scalar.

    ??? cite "Reference"
        ```bibtex
        @article{zou2005regularization,
            title={Regularization and Variable Selection via the Elastic Net},
            author={Zou, Hui and Hastie, Trevor},
            journal={Journal of the Royal Statistical Society: Series B
                     (Statistical Methodology)},
            volume={67}, number={2}, pages={301--320}, year={2005}
        }
        ```
    """
    if isinstance(l1_ratio, jax.core.Tracer):
        l1_ratio = eqx.error_if(
            l1_ratio,
            ~((l1_ratio >= 0) & (l1_ratio <= 1)),
            "elastic_net: `l1_ratio` must lie in [0, 1].",
        )
    elif not 0 <= float(l1_ratio) <= 1:
        raise ValueError(
            f"elastic_net: `l1_ratio` must lie in [0, 1] (1 is L1, 0 is L2); got "
            f"{l1_ratio!r}."
        )
    return l1_ratio * l1(tree) + (1 - l1_ratio) * l2(tree)


def time_smoothness(tree: PyTree, *, layers: int | None = None) -> Float[Array, ""]:
    """How fast the parameters change from layer to layer:
    $\\sum_j \\|\\theta_{j+1} - \\theta_j\\|^2$ over the leading layer axis.

    neuralde's fields stack their parameters on a leading layer axis (a `Dense`
    operator's `weight` has shape `(layers, out, in)`, a `bias` `(layers, out)`):
    this penalty makes $\\theta(t)$ smooth in time, the regularity that lets a deep
    residual network converge to an ODE as the layers grow (Haber & Ruthotto 2017).
    It is the squared first difference, not divided by the step; multiply by
    `layers / t1` for the discretisation of $\\int \\|\\dot\\theta\\|^2 dt$.

    Which arrays carry the layer axis:

    - `layers=None` (default): every inexact array of `tree` with at least one
        axis, whose leading axes must then all have one length (true of every
        neuralde field); otherwise it raises a `ValueError` asking for `layers=`.
    - `layers=n`: the inexact arrays whose leading axis has length `n`.

    In both cases other arrays, such as scalars (0-d arrays) or, with `layers=n`,
    arrays whose leading axis has another length (an unstacked encoder, say), are
    not layered and add nothing. A field with `layers=1` is constant in time, and
    the penalty is zero.

    **Arguments:**

    - `tree`: the parameters, any PyTree; typically a field, or a model holding
        one with `layers=`.
    - `layers`: the number of layers, to pick the layered arrays.

    **Returns:** a scalar.

    ??? cite "Reference"
        ```bibtex
        @article{haber2017stable,
            title={Stable architectures for deep neural networks},
            author={Haber, Eldad and Ruthotto, Lars},
            journal={Inverse Problems},
            volume={34}, number={1}, pages={014004}, year={2017}
        }
        ```
    """
    leaves = _leaves(tree)
    stacked = [x for x in leaves if x.ndim >= 1]
    if layers is None:
        sizes = sorted({x.shape[0] for x in stacked})
        if len(sizes) > 1:
            raise ValueError(
                "time_smoothness: the arrays of `tree` have leading axes of lengths "
                f"{sizes}, so the layer axis is ambiguous. Pass `layers=` (e.g. "
                "`layers=field.layers`), or apply it to the field alone."
            )
    else:
        layers = positive_int(layers, "layers")
        stacked = [x for x in stacked if x.shape[0] == layers]
    terms = [_squared_norm(jnp.diff(x, axis=0)) for x in stacked]
    return _total(terms, leaves)
