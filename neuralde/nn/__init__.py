"""Equinox layers: attention and transformers, graph layers, convolutional blocks,
and `ODEBlock`, the continuous-time block that wraps `neuralde.solve`.

Layers act on one example; batch with `jax.vmap`.
"""
