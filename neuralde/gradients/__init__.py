"""Gradient modes: how `neuralde.solve` takes reverse-mode derivatives.

Each mode is an `eqx.Module` that checks which solves it can differentiate and runs
them. The names `"discretize"`, `"checkpoint"`, `"adjoint"` and `"reversible"` of
`solve(..., gradient=)` are aliases of the default instances; any
`diffrax.AbstractAdjoint` is accepted too (as `Diffrax(adjoint)`), and a mode
defined outside the package is a subclass of `AbstractGradient`.
"""

from ._adjoint import Adjoint as Adjoint
from ._base import AbstractGradient as AbstractGradient, Integration as Integration
from ._checkpoint import Checkpoint as Checkpoint
from ._diffrax import Diffrax as Diffrax
from ._discretize import Discretize as Discretize
from ._names import (
    as_gradient as as_gradient,
    GRADIENT_NAMES as GRADIENT_NAMES,
)
from ._reversible import Reversible as Reversible
