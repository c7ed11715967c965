"""Penalties on the parameters of a model: scalar functions of a PyTree to add to a
loss.

Each takes any PyTree (an `eqx.Module`, such as a `neuralde.fields` field, or a
nested container of arrays) and acts on its inexact (floating-point or complex)
array leaves; everything else (integer arrays such as a graph's edge list, static
fields, Python numbers) is ignored. Apply one to part of a model to choose what it
penalises, e.g. `l2(model.field.operator)` to leave the biases out.

The regularisers of the trajectory (kinetic energy, Jacobian Frobenius norm) are
integrated by the solve: see `neuralde.regularizers`.
"""

from ._parameters import (
    elastic_net as elastic_net,
    l1 as l1,
    l2 as l2,
    time_smoothness as time_smoothness,
)
