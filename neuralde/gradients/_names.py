import diffrax as dfx

from ._adjoint import Adjoint
from ._base import AbstractGradient
from ._checkpoint import Checkpoint
from ._diffrax import Diffrax
from ._discretize import Discretize
from ._reversible import Reversible


# The string names of `solve(..., gradient=)`: aliases of these default instances.
GRADIENTS: dict[str, AbstractGradient] = {
    "discretize": Discretize(),
    "checkpoint": Checkpoint(),
    "adjoint": Adjoint(),
    "reversible": Reversible(),
}
GRADIENT_NAMES = tuple(GRADIENTS)


def as_gradient(gradient: str | AbstractGradient | dfx.AbstractAdjoint):
    """The gradient mode of a name of `GRADIENT_NAMES`, a mode itself, or a diffrax
    adjoint wrapped as `Diffrax(adjoint)`."""
    if isinstance(gradient, AbstractGradient):
        return gradient
    if isinstance(gradient, dfx.AbstractAdjoint):
        return Diffrax(gradient)
    if isinstance(gradient, str) and gradient in GRADIENTS:
        return GRADIENTS[gradient]
    raise ValueError(
        f"Unknown gradient {gradient!r}. Use one of {', '.join(GRADIENT_NAMES)}, a "
        "`neuralde.gradients.AbstractGradient` instance such as "
        "`neuralde.gradients.Checkpoint(checkpoints=8)`, or a "
        "`diffrax.AbstractAdjoint`."
    )
