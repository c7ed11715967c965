"""Positional encodings of sequence models."""

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import positive_int


def sinusoidal_encoding(
    length: int, dim: int, *, base: float = 10000.0, dtype=None
) -> Float[Array, "length dim"]:
    """The sinusoidal positional encoding of Vaswani et al. (2017),

    $P_{p, 2i} = \\sin(p\\, \\omega_i)$, $P_{p, 2i+1} = \\cos(p\\, \\omega_i)$,
    $\\omega_i = \\text{base}^{-2i/\\text{dim}}$,

    for positions $p = 0, \\ldots, \\text{length} - 1$. For an odd `dim` the last
    column is the sine of the last frequency.

    **Arguments:**

    - `length`: number of positions.
    - `dim`: number of features (the model size).
    - `base`: the longest wavelength is $2\\pi\\,\\text{base}$. Default `10000.0`.
        (Keyword only.)
    - `dtype`: floating dtype of the result (JAX's default float if `None`).
        (Keyword only.)

    **Returns:** an array of shape `(length, dim)`, added to the token embeddings.
    """
    length = positive_int(length, "length")
    dim = positive_int(dim, "dim")
    if not base > 1:
        raise ValueError(f"sinusoidal_encoding: `base` must be > 1, got {base!r}.")
    dtype = jnp.result_type(float) if dtype is None else dtype
    # Computed in at least float32: low-precision angles p * w lose the phase.
    work = jnp.promote_types(dtype, jnp.float32)
    positions = jnp.arange(length, dtype=work)[:, None]
    freqs = jnp.exp(-math.log(base) * jnp.arange(0, dim, 2, dtype=work) / dim)
    angles = positions * freqs
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return pe.reshape(length, -1)[:, :dim].astype(dtype)
