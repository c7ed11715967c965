from collections.abc import Callable

import equinox as eqx
import jax


class Vmapped(eqx.Module):
    """A function `f(t, y, args)` of one example (a vector field, a diffusion),
    applied to a batch: vmapped over the leading axis of `y`."""

    fn: Callable

    def __call__(self, t, y, args):
        return jax.vmap(self.fn, in_axes=(None, 0, None))(t, y, args)
