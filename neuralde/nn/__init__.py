"""Equinox layers: attention and transformers, graph layers, convolutional blocks,
and `ODEBlock`, the continuous-time block that wraps `neuralde.solve`.

Layers act on one example; batch with `jax.vmap`.
"""

from .._attention import dot_product_attention as dot_product_attention
from ..operators import (
    batch as batch,
    Graph as Graph,
    segment_softmax as segment_softmax,
)
from ._attention import CrossAttention as CrossAttention, SelfAttention as SelfAttention
from ._conv import (
    CNN as CNN,
    ConvBlock as ConvBlock,
    GlobalAvgPool2d as GlobalAvgPool2d,
    Pool2d as Pool2d,
    ResidualBlock as ResidualBlock,
)
from ._ensemble import Ensemble as Ensemble
from ._gpt import generate as generate, GPT as GPT
from ._graph import GAT as GAT, GCN as GCN, MessagePassing as MessagePassing
from ._ode_block import ODEBlock as ODEBlock
from ._positional import sinusoidal_encoding as sinusoidal_encoding
from ._transformer import TransformerBlock as TransformerBlock
