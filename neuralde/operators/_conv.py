import math
from collections.abc import Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import positive_int
from ._operator import AbstractOperator


PADDING_MODES = ("CIRCULAR", "ZEROS")


class Conv(AbstractOperator):
    """A 2-D convolution of one image, $K x = w * x$, mapping
    `(in_channels, height, width)` to `(out_channels, height, width)`.

    Stride 1 and "SAME" padding, so the image keeps its size and $K$ can stand in the
    stable fields: `Parabolic(operator=K)` is the parabolic CNN
    $-K^\\top \\sigma(K Y + b)$ of Ruthotto & Haber (2020), `Hamiltonian` and
    `Hyperbolic` their Hamiltonian and second-order CNNs (Chang et al. 2018). The
    transpose $K^\\top$ is derived exactly by `jax.linear_transpose`: the transposed
    convolution with the same weights, under the same boundary condition.

    As in `equinox.nn.Conv2d`, this is a cross-correlation,
    $(K x)_{o,i,j} = \\sum_{c,p,q} w_{o,c,p,q}\\, x_{c,\\,i+p-p_0,\\,j+q-q_0}$ with
    $p_0 = \\lfloor (k_h - 1)/2 \\rfloor$, $q_0 = \\lfloor (k_w - 1)/2 \\rfloor$ (the
    centre tap for odd kernels), and `weight` has shape
    `(out_channels, in_channels, kh, kw)`; inside a field it is stacked over layers,
    `(layers, out_channels, in_channels, kh, kw)`. Build time-varying kernels with
    `neuralde.operators.stack`.

    The bias that a field adds to $K x$ has one entry per output channel
    (`bias_shape() == (out_channels, 1, 1)`), so the field is translation
    equivariant.

    **Boundary.** The default `padding_mode="CIRCULAR"` reads the image as periodic.
    Then $K$ commutes exactly with every cyclic shift of the image, and so does a
    field built on it: the field is translation equivariant with no error at the
    edges. $K$ is then block circulant, diagonalised by the 2-D discrete Fourier
    transform, so its spectrum, and the stability of the field, does not depend on
    the image's borders. With `padding_mode="ZEROS"` the image is continued by
    zeros (the usual CNN convention): $K^\\top$ is still its exact adjoint and the
    stability of the fields is unchanged, but a shift only commutes with $K$ away
    from the borders.

    !!! Example

        ```python
        make = lambda k: nde.operators.Conv(3, 8, shape=(32, 32), key=k)
        K = nde.operators.stack(make, layers=4, key=key)
        field = nde.fields.Parabolic(operator=K, layers=4)
        y1 = nde.solve(field, image, steps=8, solver="euler")  # image: (3, 32, 32)
        ```

    ??? cite "Reference"
        ```bibtex
        @article{ruthotto2020deep,
            title={Deep neural networks motivated by partial differential equations},
            author={Ruthotto, Lars and Haber, Eldad},
            journal={Journal of Mathematical Imaging and Vision},
            volume={62}, pages={352--364}, year={2020}
        }
        ```
    """

    weight: Float[Array, "*layers out_channels in_channels kh kw"]
    shape: tuple[int, int] = eqx.field(static=True)
    padding_mode: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        *,
        shape: Sequence[int],
        padding_mode: Literal["CIRCULAR", "ZEROS"] = "CIRCULAR",
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`, `out_channels`: the operator maps `in_channels` channels to
            `out_channels` channels.
        - `kernel_size`: the kernel's `(kh, kw)`, or one int for a square kernel.
            Default `3`. It may not exceed the image.
        - `shape`: the image's spatial size `(height, width)`. (Keyword only.)
        - `padding_mode`: the boundary condition, `"CIRCULAR"` (default: periodic,
            exactly translation equivariant) or `"ZEROS"`. Case-insensitive, as in
            `equinox.nn.Conv2d`. (Keyword only.)
        - `dtype`: floating dtype of the weight (JAX's default float if `None`).
        - `key`: PRNG key. (Keyword only.)

        The weight is LeCun-normal, $w \\sim \\mathcal N(0, 1/\\text{fan\\_in})$ with
        $\\text{fan\\_in} = \\text{in\\_channels} \\cdot k_h k_w$, so that $Kx$ has
        unit variance for a unit-variance input (as for `Dense`).
        """
        in_channels = positive_int(in_channels, "in_channels")
        out_channels = positive_int(out_channels, "out_channels")
        kh, kw = _pair(kernel_size, "kernel_size")
        height, width = _pair(shape, "shape")
        if kh > height or kw > width:
            raise ValueError(
                f"Conv: the kernel {(kh, kw)} is larger than the image "
                f"{(height, width)}. Use a kernel no larger than the image (with "
                "circular padding a larger one only wraps onto the same pixels)."
            )
        mode = padding_mode.upper() if isinstance(padding_mode, str) else padding_mode
        if mode not in PADDING_MODES:
            raise ValueError(
                f"Conv: `padding_mode` must be 'CIRCULAR' or 'ZEROS', got "
                f"{padding_mode!r}."
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        std = 1.0 / math.sqrt(in_channels * kh * kw)
        self.weight = std * jr.normal(key, (out_channels, in_channels, kh, kw), dtype)
        self.shape = (height, width)
        self.padding_mode = mode

    def __call__(
        self, x: Float[Array, "in_channels height width"]
    ) -> Float[Array, "out_channels height width"]:
        if self.weight.ndim != 4:
            raise ValueError(
                f"Conv: one layer's weight has shape (out_channels, in_channels, kh, "
                f"kw), but this operator's is {self.weight.shape}. A stacked operator "
                "is applied one layer at a time: use `operator.at_layer(k)`."
            )
        expected = self.in_structure().shape
        if jnp.shape(x) != expected:
            raise ValueError(
                f"Conv expects one image of shape (in_channels, height, width) = "
                f"{expected}, but got shape {jnp.shape(x)}. "
                + _hint(jnp.shape(x), expected)
            )
        pads = _same_pads(self.weight.shape[-2:])
        if self.padding_mode == "CIRCULAR":
            # Wrap-padding then a VALID convolution is the periodic convolution; it is
            # linear, so `linear_transpose` gives its exact adjoint.
            x = jnp.pad(x, ((0, 0), *pads), mode="wrap")
            pads = ((0, 0), (0, 0))
        y = lax.conv_general_dilated(
            x[None],
            self.weight,
            window_strides=(1, 1),
            padding=pads,
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )
        return y[0]

    def in_structure(self) -> jax.ShapeDtypeStruct:
        in_channels = self.weight.shape[-3]
        return jax.ShapeDtypeStruct((in_channels, *self.shape), self.weight.dtype)

    def bias_shape(self) -> tuple[int, ...]:
        return (self.weight.shape[-4], 1, 1)

    def num_layers(self) -> int:
        if self.weight.ndim == 4:
            raise ValueError(
                "Conv: this operator is unstacked (weight of shape "
                f"{self.weight.shape}); a field needs one kernel per layer. Build it "
                "with `neuralde.operators.stack`, e.g. `stack(lambda k: Conv(c_in, "
                "c_out, shape=(h, w), key=k), layers=layers, key=key)`."
            )
        return super().num_layers()


def _pair(value, name: str) -> tuple[int, int]:
    values = (value, value) if not isinstance(value, Sequence) else tuple(value)
    if len(values) != 2:
        raise ValueError(f"Conv: `{name}` must be an int or a pair, got {value!r}.")
    return positive_int(values[0], name), positive_int(values[1], name)


def _same_pads(kernel: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    # lax's "SAME": the extra pixel of an even kernel goes after the image.
    return tuple(((k - 1) // 2, k // 2) for k in kernel)


def _hint(got: tuple[int, ...], expected: tuple[int, ...]) -> str:
    if len(got) == 4 and got[1:] == expected:
        return "Operators act on one image: batch with `jax.vmap`."
    if len(got) == 3 and got[1:] == expected[1:]:
        return (
            f"The image has {got[0]} channels, the operator takes {expected[0]}: "
            "build it with the image's `in_channels`."
        )
    if len(got) == 3 and got[0] == expected[0]:
        return (
            f"The image is {got[1:]}, the operator was built for {expected[1:]}: "
            "build it with `shape=` the image's (height, width)."
        )
    return "Pass one image (in_channels, height, width)."
