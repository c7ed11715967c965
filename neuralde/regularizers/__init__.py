"""Regularisers of the trajectory, integrated alongside the state by
`neuralde.solve(..., regularizers=[...])`: the RNODE penalties of Finlay et al.
(2020), $\\int \\|F\\|^2 dt$ (`KineticEnergy`) and
$\\int \\|\\partial F / \\partial y\\|_F^2 dt$ (`JacobianFrobenius`), and the
base class of your own.

Penalties on the parameters (L2, L1, elastic net, smoothness in time) are plain
functions of the model: see `neuralde.penalties`.
"""

from ._integrated import (
    AbstractRegularizer as AbstractRegularizer,
    JacobianFrobenius as JacobianFrobenius,
    KineticEnergy as KineticEnergy,
)
