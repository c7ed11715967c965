"""neuralde: continuous-time neural networks in JAX."""

import importlib.metadata

from . import (
    data as data,
    fields as fields,
    gradients as gradients,
    losses as losses,
    nn as nn,
    penalties as penalties,
    regularizers as regularizers,
    stability as stability,
    train as train,
)
from ._resnet import resnet as resnet
from ._solve import solve as solve
from ._solvers import Leapfrog as Leapfrog, ReversibleRK as ReversibleRK, RK4 as RK4


__version__ = importlib.metadata.version("neuralde")


def __getattr__(name):
    # The commands' modules load on first use, so that `import neuralde` loads the
    # library only: `neuralde.study` (the stability study, `neuralde.study.study`)
    # and `neuralde.bench` (the benchmark runner, `neuralde.bench.bench`).
    if name in ("study", "bench"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
