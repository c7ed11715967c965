"""neuralde: continuous-time neural networks in JAX."""

import importlib.metadata

from . import (
    data as data,
    fields as fields,
    gradients as gradients,
    losses as losses,
    nn as nn,
    regularizers as regularizers,
    stability as stability,
    train as train,
)
from ._resnet import resnet as resnet
from ._solve import solve as solve
from ._solvers import Leapfrog as Leapfrog, ReversibleRK as ReversibleRK, RK4 as RK4
from .study import study as study


__version__ = importlib.metadata.version("neuralde")
