from collections.abc import Callable, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import positive_int


Activation = Callable[[Array], Array]


class ConvBlock(eqx.Module):
    """Convolution, group normalisation, activation: $\\sigma(\\mathrm{GN}(w * x))$,
    on one image `(in_channels, height, width)`.

    The convolution is an `equinox.nn.Conv2d` without bias (the normalisation's
    shift takes its place). The normalisation is `equinox.nn.GroupNorm` (Wu & He
    2018): it normalises each example on its own, so the block needs no batch
    statistics and no state, and acts on one example like every neuralde layer.

    With the default `padding="SAME"`, `stride=1` and `padding_mode="CIRCULAR"`, the
    block commutes with every cyclic shift of the image: it is exactly translation
    equivariant.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{wu2018group,
            title={Group Normalization},
            author={Wu, Yuxin and He, Kaiming},
            booktitle={European Conference on Computer Vision},
            year={2018}
        }
        ```
    """

    conv: eqx.nn.Conv2d
    norm: eqx.nn.GroupNorm
    activation: Activation = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        *,
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = "SAME",
        padding_mode: Literal["CIRCULAR", "ZEROS", "REFLECT", "REPLICATE"] = "CIRCULAR",
        groups: int | None = None,
        activation: Activation = jax.nn.relu,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`, `out_channels`: channels of the input and output images.
        - `kernel_size`: the kernel's `(kh, kw)`, or one int. Default `3`.
        - `stride`: as for `equinox.nn.Conv2d`. Default `1`. (Keyword only.)
        - `padding`: `"SAME"` (default: the image keeps its size), `"VALID"` (no
            padding), or pixels per side, as for `equinox.nn.Conv2d`. (Keyword only.)
        - `padding_mode`: the values of the padding: `"CIRCULAR"` (default: the
            image is periodic, so the block is exactly translation equivariant),
            `"ZEROS"`, `"REFLECT"` or `"REPLICATE"`. (Keyword only.)
        - `groups`: groups of the normalisation; it must divide `out_channels`.
            Default: groups of 16 channels if 16 divides `out_channels` (Wu & He
            2018), else one group, a layer norm over the image. (Keyword only.)
        - `activation`: default `jax.nn.relu`. (Keyword only.)
        - `dtype`: floating dtype of the parameters. (Keyword only.)
        - `key`: PRNG key. (Keyword only.)
        """
        self.conv = eqx.nn.Conv2d(
            positive_int(in_channels, "in_channels"),
            positive_int(out_channels, "out_channels"),
            kernel_size,
            stride=stride,
            padding=padding,
            use_bias=False,
            padding_mode=padding_mode,
            dtype=dtype,
            key=key,
        )
        self.norm = _group_norm(out_channels, groups, dtype, "ConvBlock")
        self.activation = activation

    def __call__(
        self, x: Float[Array, "in_channels height width"], *, key=None
    ) -> Float[Array, "out_channels new_height new_width"]:
        """**Arguments:**

        - `x`: one image `(in_channels, height, width)`; batch with `jax.vmap`.
        - `key`: ignored. (Keyword only.)

        **Returns:** the image `(out_channels, new_height, new_width)`.
        """
        check_conv_input("ConvBlock", self.conv, x)
        return self.activation(self.norm(self.conv(x)))


class ResidualBlock(eqx.Module):
    """Pre-activation residual block (He et al. 2016) on one image,

    $x + w_2 * \\sigma(\\mathrm{GN}(w_1 * \\sigma(\\mathrm{GN}(x))))$.

    The block is $x + F(x)$: one explicit Euler step of unit size on the field $F$,
    the discrete counterpart of a continuous block. Channels and image size are kept.
    The convolutions have stride 1 and "SAME" padding; with the default
    `padding_mode="CIRCULAR"` the block is exactly translation equivariant.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{he2016identity,
            title={Identity Mappings in Deep Residual Networks},
            author={He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
            booktitle={European Conference on Computer Vision},
            year={2016}
        }
        ```
    """

    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    activation: Activation = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        kernel_size: int | Sequence[int] = 3,
        *,
        padding_mode: Literal["CIRCULAR", "ZEROS", "REFLECT", "REPLICATE"] = "CIRCULAR",
        groups: int | None = None,
        activation: Activation = jax.nn.relu,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `channels`: channels of the input and output images.
        - `kernel_size`: the kernels' `(kh, kw)`, or one int. Default `3`.
        - `padding_mode`, `groups`, `activation`, `dtype`: as for
            [`neuralde.nn.ConvBlock`][]. (Keyword only.)
        - `key`: PRNG key. (Keyword only.)
        """
        channels = positive_int(channels, "channels")
        k1, k2 = jr.split(key)
        conv = lambda k: eqx.nn.Conv2d(  # noqa: E731
            channels,
            channels,
            kernel_size,
            padding="SAME",
            padding_mode=padding_mode,
            dtype=dtype,
            key=k,
        )
        self.norm1 = _group_norm(channels, groups, dtype, "ResidualBlock")
        self.conv1 = conv(k1)
        self.norm2 = _group_norm(channels, groups, dtype, "ResidualBlock")
        self.conv2 = conv(k2)
        self.activation = activation

    def __call__(
        self, x: Float[Array, "channels height width"], *, key=None
    ) -> Float[Array, "channels height width"]:
        """**Arguments:**

        - `x`: one image `(channels, height, width)`; batch with `jax.vmap`.
        - `key`: ignored. (Keyword only.)

        **Returns:** the image, same shape.
        """
        check_conv_input("ResidualBlock", self.conv1, x)
        h = self.conv1(self.activation(self.norm1(x)))
        return x + self.conv2(self.activation(self.norm2(h)))


class Pool2d(eqx.Module):
    """Max or average pooling of one image over windows: `equinox.nn.MaxPool2d` or
    `equinox.nn.AvgPool2d`, with checks of the input.

    Unlike equinox's pools, the stride defaults to the window size (non-overlapping
    windows), the usual choice for downsampling.
    """

    pool: eqx.nn.MaxPool2d | eqx.nn.AvgPool2d

    def __init__(
        self,
        kernel_size: int | Sequence[int] = 2,
        stride: int | Sequence[int] | None = None,
        *,
        padding: int | Sequence[int] = 0,
        mode: Literal["max", "avg"] = "max",
    ):
        """**Arguments:**

        - `kernel_size`: the window `(kh, kw)`, or one int. Default `2`.
        - `stride`: the step between windows. Default: `kernel_size`.
        - `padding`: pixels added on each side, as for `equinox.nn.MaxPool2d`
            (at most the window size). Default `0`. (Keyword only.)
        - `mode`: `"max"` (default) or `"avg"`. (Keyword only.)
        """
        if mode not in ("max", "avg"):
            raise ValueError(f"Pool2d: `mode` must be 'max' or 'avg', got {mode!r}.")
        stride = kernel_size if stride is None else stride
        cls = eqx.nn.MaxPool2d if mode == "max" else eqx.nn.AvgPool2d
        self.pool = cls(kernel_size, stride, padding)

    def __call__(
        self, x: Float[Array, "channels height width"], *, key=None
    ) -> Float[Array, "channels new_height new_width"]:
        """**Arguments:**

        - `x`: one image `(channels, height, width)`; batch with `jax.vmap`.
        - `key`: ignored. (Keyword only.)

        **Returns:** the pooled image.
        """
        _check_image("Pool2d", x, None)
        _check_window("Pool2d", x, self.pool.kernel_size, self.pool.padding)
        return self.pool(x)


class GlobalAvgPool2d(eqx.Module):
    """The mean over all pixels of each channel: `(channels, height, width) ->
    (channels,)`. It is invariant under every shift of the image."""

    def __call__(
        self, x: Float[Array, "channels height width"], *, key=None
    ) -> Float[Array, " channels"]:
        """**Arguments:**

        - `x`: one image `(channels, height, width)`; batch with `jax.vmap`.
        - `key`: ignored. (Keyword only.)

        **Returns:** one value per channel.
        """
        _check_image("GlobalAvgPool2d", x, None)
        return jnp.mean(x, axis=(-2, -1))


class CNN(eqx.Module):
    """A small image classifier for one image `(in_channels, height, width)`:

    stem ([`neuralde.nn.ConvBlock`][]) → max-pool → body → group norm → activation →
    global average pool → linear head → logits `(num_classes,)`.

    The body maps `(channels, h, w)` to `(channels, h', w')`. By default it is `depth`
    [`neuralde.nn.ResidualBlock`][]s; any module can take its place, such as a
    continuous-time block that solves a stable field built on
    `neuralde.operators.Conv` (its `shape=` is the image size after the stem's pool).

    !!! Example

        ```python
        model = nde.nn.CNN(1, 10, channels=16, key=key)
        logits = jax.vmap(model)(images)  # images: (batch, 1, 8, 8)

        # A parabolic CNN as the body, on the (16, 4, 4) images after the pool.
        make = lambda k: nde.operators.Conv(16, 16, shape=(4, 4), key=k)
        K = nde.operators.stack(make, layers=4, key=k1)
        field = nde.fields.Parabolic(operator=K, layers=4)
        body = nde.nn.ODEBlock(field, steps=4, solver="euler")
        model = nde.nn.CNN(1, 10, channels=16, body=body, key=k2)
        ```
    """

    stem: ConvBlock
    pool: Pool2d | None
    body: Callable[[Array], Array]
    norm: eqx.nn.GroupNorm
    head: eqx.nn.Linear
    channels: int = eqx.field(static=True)
    activation: Activation = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 16,
        depth: int | None = None,
        body: Callable[[Array], Array] | None = None,
        kernel_size: int | Sequence[int] = 3,
        pool: int | None = 2,
        padding_mode: Literal["CIRCULAR", "ZEROS", "REFLECT", "REPLICATE"] = "CIRCULAR",
        groups: int | None = None,
        activation: Activation = jax.nn.relu,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`: channels of the input image.
        - `num_classes`: length of the logits.
        - `channels`: channels after the stem, kept through the body. Default `16`.
            (Keyword only.)
        - `depth`: the number of residual blocks of the default body. Default `2`.
            Not with `body`. (Keyword only.)
        - `body`: the middle block, any callable (typically an `eqx.Module`, whose
            parameters are then trained) mapping `(channels, h, w)` to
            `(channels, h', w')`. Default: `depth` residual blocks. (Keyword only.)
        - `kernel_size`: the kernels of the stem and of the residual blocks.
            (Keyword only.)
        - `pool`: window and stride of the max-pool after the stem, or `None` for
            none. Default `2`, halving the image. (Keyword only.)
        - `padding_mode`, `groups`, `activation`, `dtype`: as for
            [`neuralde.nn.ConvBlock`][]. (Keyword only.)
        - `key`: PRNG key. (Keyword only.)
        """
        channels = positive_int(channels, "channels")
        num_classes = positive_int(num_classes, "num_classes")
        if body is not None and depth is not None:
            raise ValueError(
                "CNN: pass either `depth` (residual blocks of the default body) or "
                "`body` (your own middle block), not both."
            )
        skey, bkey, hkey = jr.split(key, 3)
        options = dict(
            padding_mode=padding_mode, groups=groups, activation=activation, dtype=dtype
        )
        self.stem = ConvBlock(in_channels, channels, kernel_size, key=skey, **options)
        self.pool = None if pool is None else Pool2d(positive_int(pool, "pool"))
        if body is None:
            depth = 2 if depth is None else depth
            if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
                raise ValueError(
                    f"CNN: `depth` must be a non-negative integer, got {depth!r}."
                )
            body = eqx.nn.Sequential(
                [
                    ResidualBlock(channels, kernel_size, key=k, **options)
                    for k in jr.split(bkey, depth)
                ]
            )
        self.body = body
        self.norm = _group_norm(channels, groups, dtype, "CNN")
        self.head = eqx.nn.Linear(channels, num_classes, dtype=dtype, key=hkey)
        self.channels = channels
        self.activation = activation

    def __call__(
        self, x: Float[Array, "in_channels height width"], *, key=None
    ) -> Float[Array, " num_classes"]:
        """**Arguments:**

        - `x`: one image `(in_channels, height, width)`; batch with `jax.vmap`.
        - `key`: ignored. (Keyword only.)

        **Returns:** the logits `(num_classes,)`.
        """
        h = self.stem(x)
        if self.pool is not None:
            h = self.pool(h)
        out = self.body(h)
        if (
            not isinstance(out, jax.Array)
            or out.ndim != 3
            or out.shape[0] != self.channels
        ):
            raise ValueError(
                f"CNN: the body must map an image ({self.channels}, h, w) to "
                f"({self.channels}, h', w'), but it mapped {h.shape} to "
                f"{getattr(out, 'shape', type(out).__name__)}. Build the body for "
                f"`channels={self.channels}` channels."
            )
        h = self.activation(self.norm(out))
        return self.head(GlobalAvgPool2d()(h))


def check_conv_input(name: str, conv: eqx.nn.Conv2d, x) -> None:
    """Trace-time checks that `x` is one image that `conv` can take: its rank, its
    channels, and a padded size at least the (dilated) kernel."""
    _check_image(name, x, conv.in_channels)
    if isinstance(conv.padding, str):
        if conv.padding != "VALID":
            return  # "SAME" padding fits any kernel to any image
        padding = ((0, 0), (0, 0))
    else:
        padding = conv.padding
    kernel = tuple(d * (k - 1) + 1 for k, d in zip(conv.kernel_size, conv.dilation))
    _check_window(name, x, kernel, padding)


def _check_image(name: str, x, channels: int | None) -> None:
    shape = jnp.shape(x)
    if len(shape) != 3:
        hint = " Layers act on one example: batch with `jax.vmap`." * (len(shape) == 4)
        raise ValueError(
            f"{name} expects one image of shape (channels, height, width), but got "
            f"shape {shape}.{hint}"
        )
    if channels is not None and shape[0] != channels:
        raise ValueError(
            f"{name} was built for images with in_channels={channels}, but got "
            f"shape {shape} ({shape[0]} channels). Build it with "
            f"`in_channels={shape[0]}`, or pass channels first: (channels, height, "
            "width)."
        )


def _check_window(name: str, x, kernel, padding) -> None:
    size = jnp.shape(x)[1:]
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(size, padding))
    if any(p < k for p, k in zip(padded, kernel)):
        raise ValueError(
            f"{name}: the window {tuple(kernel)} is larger than the image {size} "
            f"with padding {tuple(padding)}. Use a smaller window, pad the image "
            '(e.g. `padding="SAME"` for a convolution), or pool less before.'
        )


def _group_norm(channels: int, groups: int | None, dtype, name: str):
    if groups is None:
        # 16 channels per group, the choice of Wu & He (2018, Table 3); fewer
        # channels make one group (a layer norm over the image), since a group of
        # one channel would erase each channel's contrast, which a global average
        # pool then needs.
        groups = channels // 16 if channels % 16 == 0 else 1
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{name}: `groups` must be a positive integer, got {groups}.")
    if channels % groups:
        raise ValueError(
            f"{name}: `groups={groups}` must divide the {channels} channels of the "
            "normalisation."
        )
    return eqx.nn.GroupNorm(groups, channels, dtype=dtype)
