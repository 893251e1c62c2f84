"""VGG19 feature extractor in Flax, with Keras' "caffe" preprocessing.

The network is the convolutional part of VGG19 ("notop") exactly as Keras builds it, so the
official Keras weights load without any transposition: kernels are HWIO ``(3, 3, in, out)``,
which is Flax's layout too. Layer names are Keras' names (``block1_conv1`` ... ``block5_conv4``,
``block1_pool`` ... ``block5_pool``) and a conv layer's output is its activation *after* ReLU,
as in Keras where ``Conv2D`` carries ``activation="relu"``.

This module knows no files: params come from :mod:`nst_jax.weights`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import winograd

# Keras' ImageNet mean in BGR order ("caffe" mode of keras.applications.imagenet_utils).
BGR_MEAN = (103.939, 116.779, 123.68)

# (number of convs, filters) per block, from Simonyan & Zisserman, configuration E.
BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))

CONV_LAYERS: tuple[str, ...] = tuple(
    f"block{b}_conv{c}" for b, (n, _) in enumerate(BLOCKS, start=1) for c in range(1, n + 1)
)
POOL_LAYERS: tuple[str, ...] = tuple(f"block{b}_pool" for b in range(1, len(BLOCKS) + 1))
# Every named output in network order.
LAYERS: tuple[str, ...] = tuple(
    name
    for b, (n, _) in enumerate(BLOCKS, start=1)
    for name in [f"block{b}_conv{c}" for c in range(1, n + 1)] + [f"block{b}_pool"]
)

Params = Mapping[str, Mapping[str, jax.Array]]


def conv_shapes() -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """The expected ``(kernel shape, bias shape)`` of every conv layer, keyed by Keras name."""
    shapes = {}
    in_channels = 3
    for b, (n, filters) in enumerate(BLOCKS, start=1):
        for c in range(1, n + 1):
            shapes[f"block{b}_conv{c}"] = ((3, 3, in_channels, filters), (filters,))
            in_channels = filters
    return shapes


def preprocess(image: jax.Array) -> jax.Array:
    """Map an RGB image in [0, 1] to VGG input: ``x * 255``, RGB -> BGR, minus the BGR mean.

    Args:
      image: ``(..., 3)`` float RGB in [0, 1].

    Returns:
      ``(..., 3)`` float BGR, mean-subtracted (Keras ``preprocess_input``, caffe mode).
    """
    return image[..., ::-1] * 255.0 - jnp.asarray(BGR_MEAN, dtype=image.dtype)


def deprocess(x: jax.Array) -> jax.Array:
    """Inverse of :func:`preprocess`: add the mean back, BGR -> RGB, divide by 255."""
    return (x + jnp.asarray(BGR_MEAN, dtype=x.dtype))[..., ::-1] / 255.0


def check_layers(layers: Iterable[str]) -> tuple[str, ...]:
    """Return ``layers`` as a tuple, or raise ``ValueError`` naming any unknown layer."""
    layers = tuple(layers)
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
        raise ValueError(f"unknown VGG19 layer(s) {', '.join(unknown)}; known: {', '.join(LAYERS)}")
    return layers


def pools_before(layers: Iterable[str]) -> int:
    """How many 2x2 pools the image passes through before the deepest of ``layers``.

    An image needs both sides at least ``2 ** pools_before(layers)`` pixels for every requested
    layer to have a non-empty output.
    """
    deepest = max(LAYERS.index(name) for name in check_layers(layers))
    return sum(1 for name in LAYERS[:deepest] if name.endswith("_pool"))


def receptive_span(layer: str) -> tuple[int, int, int]:
    """``(before, after, stride)``: feature ``i`` of ``layer`` (along one axis) depends on
    input pixels ``[i * stride - before, i * stride + after]``. Walked through the network:
    a 3x3 convolution widens the span by one step of its input's stride on each side, a 2x2
    pool by one step after and doubles the stride."""
    before = after = 0
    stride = 1
    for name in LAYERS[: LAYERS.index(layer) + 1]:
        if name.endswith("_pool"):
            after += stride
            stride *= 2
        else:
            before += stride
            after += stride
    return before, after, stride


def tile_alignment(layers: Sequence[str]) -> int:
    """Tiles are multiples of this, the stride of the deepest of ``layers``: every layer's
    part of a tile then starts and ends on that layer's grid."""
    return 2 ** pools_before(layers)


def needed_spans(
    wanted: Mapping[str, tuple[int, int]], size: int
) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
    """Along one axis of a ``size`` px image: which input pixels, and which positions of every
    layer's map, compute the features ``wanted`` exactly.

    Walked back from the deepest wanted layer: a 3x3 convolution needs one more position of
    its input on each side (none past the map's ends, where its zero padding is the whole
    image's), a 2x2 pool the two positions under each output. A wanted span is added to
    what deeper layers need of its layer. Every span a pool reads starts on an even position,
    so a map computed on these spans pools the same pairs as the whole image's.

    Args:
      wanted: ``{layer: (start, end)}``, positions ``[start, end)`` of the layer's map.
      size: the image's side along this axis, in pixels.

    Returns:
      ``((start, end), {layer: (start, end)})``: the input pixels, and each layer's positions,
      for every layer up to the deepest wanted one.
    """
    chain = LAYERS[: max(LAYERS.index(name) for name in wanted) + 1]
    sizes = []  # each layer's input side
    for name in chain:
        sizes.append(size)
        size = size // 2 if name.endswith("_pool") else size
    spans: dict[str, tuple[int, int]] = {}
    need: tuple[int, int] | None = None
    for name, input_size in zip(reversed(chain), reversed(sizes), strict=True):
        if name in wanted:
            start, end = wanted[name]
            need = (start, end) if need is None else (min(need[0], start), max(need[1], end))
        spans[name] = need
        start, end = need
        if name.endswith("_pool"):
            need = (2 * start, 2 * end)
        else:
            need = (max(0, start - 1), min(input_size, end + 1))
    return need, dict(reversed(spans.items()))


def halo(layers: Sequence[str]) -> int:
    """Pixels a tile's window reaches past its interior on each side (away from the image's
    borders) so that the interior's features at ``layers`` are exact (:func:`needed_spans`
    for a tile in the middle of a large image)."""
    tile = tile_alignment(layers) * 16
    wanted = {}
    for name in layers:
        stride = receptive_span(name)[2]
        wanted[name] = (tile // stride, 2 * tile // stride)
    (start, end), _ = needed_spans(wanted, 3 * tile)
    return max(tile - start, end - 2 * tile)


def smallest_tile(layers: Sequence[str]) -> int:
    """The smallest tile :func:`check_tile` accepts: the halo, up to the alignment."""
    align = tile_alignment(layers)
    return -(-halo(layers) // align) * align


def check_tile(tile: int, layers: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``tile`` is a multiple of the alignment and at least the
    halo (a smaller tile would compute mostly halo)."""
    align, margin = tile_alignment(layers), halo(layers)
    if tile % align:
        raise ValueError(f"tile {tile} is not a multiple of {align} (the layers' pooling grid)")
    if tile < margin:
        raise ValueError(
            f"tile {tile} is smaller than the {margin} px halo these layers need; give at "
            f"least {smallest_tile(layers)}"
        )


def pool_2x2(x: jax.Array, pooling: str = "max") -> jax.Array:
    """2x2 pooling, stride 2, VALID padding (an odd last row or column is dropped), of
    ``(..., H, W, C)`` features.

    Written with a reshape rather than ``reduce_window``: XLA:CPU runs the window's four
    strided views and their gradient far faster than ``reduce_window`` and its
    ``select_and_scatter`` gradient (512 px step: 3665 -> 3477 ms). Values and gradients are
    identical to Keras' and Flax's pools, ties included (see :func:`_max4`).

    Args:
      x: ``(..., H, W, C)`` features.
      pooling: ``"max"`` or ``"avg"``.
    """
    *lead, h, w, c = x.shape
    x = x[..., : h // 2 * 2, : w // 2 * 2, :].reshape(*lead, h // 2, 2, w // 2, 2, c)
    # The window's elements in row-major order, each an (..., H/2, W/2, C) strided view.
    window = [x[..., :, i, :, j, :] for i in (0, 1) for j in (0, 1)]
    if pooling == "max":
        return _max4(*window)
    return (window[0] + window[1] + window[2] + window[3]) / 4


@jax.custom_jvp
def _max4(a: jax.Array, b: jax.Array, c: jax.Array, d: jax.Array) -> jax.Array:
    """Element-wise maximum of a pooling window's four elements.

    Its derivative follows the *first* maximal element in row-major order, as TensorFlow's
    and XLA's max-pool gradients do. ``jnp.max`` would share it among tied elements, and ties
    are common: flat areas of 8-bit images give equal activations in block 1.
    """
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


@_max4.defjvp
def _max4_jvp(primals, tangents):
    a, b, c, _ = primals
    ta, tb, tc, td = tangents
    out = _max4(*primals)
    return out, jnp.where(a == out, ta, jnp.where(b == out, tb, jnp.where(c == out, tc, td)))


class _Conv3x3(nn.Module):
    """A SAME, stride-1 3x3 convolution with bias, of one ``(H, W, C)`` image.

    Its params are ``{kernel, bias}`` (``nn.Conv``'s names), or ``{winograd, bias}`` after
    :func:`prepare_params`, which it then computes by Winograd's algorithm.

    With ``row_axis``, ``x`` is one device's rows of a map split over that ``shard_map`` axis:
    the rows next to its first and last come from the neighbouring devices
    (:func:`neighbour_rows`), so the result equals the whole map's convolution there.
    """

    features: int
    row_axis: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        by_winograd = self.has_variable("params", "winograd")
        rows, above = x.shape[0], 0
        if self.row_axis is not None:
            # Winograd computes output rows in pairs: with two rows from above (an even
            # count) its pairs are the whole image's, so each device rounds as one would.
            above = 2 if by_winograd else 1
            top, bottom = neighbour_rows(x, self.row_axis, above)
            x = jnp.concatenate([top, x, bottom])
        if by_winograd:
            # Like nn.Conv, compute in the promoted dtype of the input and the params.
            u = self.get_variable("params", "winograd")
            dtype = jnp.result_type(x, bias, u[0][0])
            cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
            y, bias = winograd.conv3x3(cast(x), jax.tree.map(cast, u)), cast(bias)
        else:
            shape = (3, 3, x.shape[-1], self.features)
            kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
            x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
            y = jax.lax.conv_general_dilated(
                x[None], kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )[0]
        if above:
            # SAME on the widened rows, less the output rows that are not this device's.
            # (Not a convolution unpadded in the rows: XLA:CPU's float64 gradient of that
            # ran 6x slower, for a 1% smaller float32 step.)
            y = y[above : above + rows]
        return y + bias


def neighbour_rows(x: jax.Array, axis: str, above: int = 1) -> tuple[jax.Array, jax.Array]:
    """The rows around one device's ``(h, W, C)`` rows of a map split over ``shard_map`` axis
    ``axis``: the last ``above`` rows of the device above, and the first row of the device
    below. The first and last devices get zeros, the SAME convolution's padding at the
    image's true edges.
    """
    n = jax.lax.axis_size(axis)
    # ppermute gives zeros to a device no pair sends to: the ends of the chain.
    top = jax.lax.ppermute(x[-above:], axis, [(i, i + 1) for i in range(n - 1)])
    bottom = jax.lax.ppermute(x[:1], axis, [(i + 1, i) for i in range(n - 1)])
    return top, bottom


class _Block(nn.Module):
    """One VGG block: its convolutions (each followed by ReLU) and its pool.

    Attributes:
      index: block number, 1 to 5.
      wanted: names of the outputs to return.
      last: index in ``LAYERS`` of the deepest layer needed; later layers are not computed.
      pooling: ``"max"`` or ``"avg"``.
      crops: ``((layer, (top, bottom, left, right)), ...)``: the part of a layer's output
        kept for the next layer (a tile's window shrinking with depth; :mod:`nst_jax.tiling`).
      row_axis: the ``shard_map`` axis the rows are split over, or None (``_Conv3x3``).
    """

    index: int
    wanted: tuple[str, ...]
    last: int
    pooling: str
    crops: tuple = ()
    row_axis: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        out = {}
        crops = dict(self.crops)
        for name in LAYERS[: self.last + 1]:
            if not name.startswith(f"block{self.index}_"):
                continue
            if name.endswith("_pool"):
                x = pool_2x2(x, self.pooling)
            else:
                filters = conv_shapes()[name][0][-1]
                # Keras' names at the leaves: the params tree is {layer: {kernel, bias}}.
                x = nn.relu(_Conv3x3(filters, self.row_axis, name=name)(x))
            if name in crops:
                top, bottom, left, right = crops[name]
                x = x[top:bottom, left:right]
            if name in self.wanted:
                out[name] = x
        return x, out


class VGG19(nn.Module):
    """VGG19 convolutional base for one image (batch it with ``jax.vmap``).

    Its params are ``{"block1": {"block1_conv1": {kernel, bias}, ...}, ...}``;
    :func:`image_features` takes the flat ``{layer: {kernel, bias}}`` tree and nests it.

    Attributes:
      layers: names of the outputs to return. Layers past the deepest one requested are not
        computed at all.
      pooling: ``"max"`` (Keras) or ``"avg"`` (Gatys et al. suggest average pooling for
        smoother gradients).
      crops: per layer, the part of its output kept (see ``_Block``); none by default.
      row_axis: the ``shard_map`` axis ``x``'s rows are split over, or None (one device).
    """

    layers: Sequence[str]
    pooling: str = "max"
    crops: tuple = ()
    row_axis: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """Map a preprocessed ``(H, W, 3)`` BGR image to ``{layer: (h, w, c)}``."""
        out = {}
        for block in _blocks(self.layers, self.pooling, self.crops, self.row_axis):
            x, found = block(x)
            out.update(found)
        return out


def _blocks(
    layers: Sequence[str], pooling: str, crops: tuple = (), row_axis: str | None = None
) -> list[_Block]:
    """The blocks that compute ``layers``, in order (named ``block1`` ...)."""
    last = max(LAYERS.index(name) for name in layers)
    count = int(LAYERS[last][len("block")])
    return [
        _Block(i, tuple(layers), last, pooling, crops, row_axis, name=f"block{i}")
        for i in range(1, count + 1)
    ]


CONV_METHODS: tuple[str, ...] = ("auto", "direct", "winograd")

# The fewest input channels for which a layer uses Winograd: every layer but the first, whose
# 3 input channels make its products too thin to gain. Measured on the whole step (2-core CPU,
# ms per step at 256 / 512 px): direct 835 / 3058, from 128 channels 551 / 2125, from 64
# channels 488 / 2033 (scripts/README.md).
WINOGRAD_MIN_CHANNELS = 64


# "auto" uses Winograd only for runs long enough to repay its compile time: its step compiles
# about 5 s slower on a 2-core CPU (256 px: 5.7 vs 1.0 s, 4972 vs 747 HLO instructions) and
# saves about 4 us per pixel per step (256 px: 835 -> 488 ms; 512 px: 3058 -> 2033 ms). A
# 64 x 96 image would need ~200 steps; a 512 x 512 one, 5.
WINOGRAD_MIN_PIXEL_STEPS = 1_200_000


def resolve_conv(conv: str, pixel_steps: int | None = None) -> str:
    """The convolution method to use: ``"direct"`` or ``"winograd"``.

    Args:
      conv: ``"direct"``, ``"winograd"``, or ``"auto"``: Winograd on CPU for runs of at least
        ``WINOGRAD_MIN_PIXEL_STEPS`` pixel-steps, direct otherwise (GPU convolution libraries
        pick Winograd-style algorithms themselves, and a short run is mostly compile time).
      pixel_steps: images x pixels x steps of the run, over its scales (``None``: long).
    """
    if conv not in CONV_METHODS:
        raise ValueError(f"unknown convolution method {conv!r}; known: {', '.join(CONV_METHODS)}")
    if conv == "auto":
        long_run = pixel_steps is None or pixel_steps >= WINOGRAD_MIN_PIXEL_STEPS
        return "winograd" if jax.default_backend() == "cpu" and long_run else "direct"
    return conv


def prepare_params(
    params: Params,
    conv: str = "auto",
    min_channels: int = WINOGRAD_MIN_CHANNELS,
    pixel_steps: int | None = None,
    layers: Sequence[str] | None = None,
) -> Params:
    """Params made ready for the convolution method ``conv``, once per run.

    With ``"winograd"``, every layer with at least ``min_channels`` input channels has its
    ``kernel`` replaced by its Winograd transform, ``{winograd: 4 x 4 (in, out) arrays, bias}``,
    and the network computes it by :func:`nst_jax.winograd.conv3x3`. With ``"direct"`` the params
    are returned as they are. Either way the features are the same up to float rounding.

    Args:
      params: ``{layer: {"kernel", "bias"}}`` as returned by ``nst_jax.load_vgg19``.
      conv: ``"auto"``, ``"direct"`` or ``"winograd"`` (see :func:`resolve_conv`).
      min_channels: input channels from which a layer uses Winograd.
      pixel_steps: images x pixels x steps of the run, for ``"auto"``.
      layers: the layers the run uses; with Winograd, params of later layers are left out
        (the transformed kernels are 16/9 the size of the originals).
    """
    if resolve_conv(conv, pixel_steps) == "direct":
        return params
    if layers is not None:
        last = max(LAYERS.index(name) for name in check_layers(layers))
        params = {name: leaves for name, leaves in params.items() if LAYERS.index(name) <= last}
    chosen = {
        name: leaves["kernel"]
        for name, leaves in params.items()
        if "kernel" in leaves and leaves["kernel"].shape[2] >= min_channels
    }
    transformed = _transform_kernels(chosen)
    return {
        name: {"winograd": transformed[name], "bias": leaves["bias"]}
        if name in transformed
        else leaves
        for name, leaves in params.items()
    }


def _transform_kernels(kernels: Mapping[str, jax.Array]) -> dict[str, winograd.WinogradKernel]:
    try:
        host = {name: np.asarray(kernel) for name, kernel in kernels.items()}
    except jax.errors.TracerArrayConversionError:  # under a transformation (eval_shape, say)
        return {name: winograd.transform_kernel(kernel) for name, kernel in kernels.items()}
    # Concrete kernels are transformed by NumPy and placed where they came from: as a jitted
    # program the transform cost 0.2 s of compilation (or of loading it from the cache) at
    # every start, for a few milliseconds of additions.
    return {
        name: jax.device_put(winograd.transform_kernel(kernel), _placement(kernels[name]))
        for name, kernel in host.items()
    }


def _placement(array) -> jax.sharding.Sharding | None:
    # Only a committed array's sharding is kept: committing the kernels would commit the
    # step's outputs, and the second step (committed images) would be compiled again.
    return array.sharding if isinstance(array, jax.Array) and array.committed else None


def nest_params(params: Params) -> dict[str, dict[str, Mapping[str, jax.Array]]]:
    """``{layer: {kernel, bias}}`` -> ``{"blockB": {layer: {kernel, bias}}}`` (the module's
    tree)."""
    nested: dict[str, dict[str, Mapping[str, jax.Array]]] = {}
    for name, leaves in params.items():
        nested.setdefault(name.split("_")[0], {})[name] = leaves
    return nested


def image_features(
    params: Params,
    image: jax.Array,
    layers: Sequence[str],
    pooling: str = "max",
    remat: bool = False,
    crops: tuple = (),
    row_axis: str | None = None,
) -> dict[str, jax.Array]:
    """Features of one RGB image.

    Args:
      params: ``{layer: {"kernel", "bias"}}`` as returned by ``nst_jax.load_vgg19``.
      image: ``(H, W, 3)`` float RGB in [0, 1].
      layers: names of the layers to return (see ``LAYERS``).
      pooling: ``"max"`` or ``"avg"``.
      remat: under differentiation, keep only each block's input and recompute the block's
        activations during the backward pass (``jax.checkpoint`` per block), at the cost of
        about one more forward pass. The first block, at full resolution, holds most of
        VGG's activations and must be live for its own backward pass anyway, so the saving
        is bounded (scripts/README.md).
      crops: ``((layer, (top, bottom, left, right)), ...)``, static: after each listed layer
        only that part of its map is kept (a tile's window, :mod:`nst_jax.tiling`).
      row_axis: inside ``shard_map``, the mesh axis ``image``'s rows are split over: each
        device passes its rows (a multiple of :func:`tile_alignment`) and gets its rows of
        every map, the convolutions' borders exchanged with its neighbours
        (:mod:`nst_jax.rows`).

    Returns:
      ``{layer: (h, w, c)}`` activations; conv outputs are after ReLU.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {tuple(image.shape)}")
    nested = nest_params(params)
    x = preprocess(image)
    if not remat:
        return VGG19(tuple(layers), pooling, crops, row_axis).apply({"params": nested}, x)
    out = {}
    for block in _blocks(layers, pooling, crops, row_axis):
        apply = jax.checkpoint(lambda p, x, block=block: block.apply({"params": p}, x))
        x, found = apply(nested[block.name], x)
        out.update(found)
    return out


def vgg19_features(
    params: Params, images: jax.Array, layers: Sequence[str], pooling: str = "max"
) -> dict[str, jax.Array]:
    """Features of one RGB image or a batch.

    Args:
      params: ``{layer: {"kernel", "bias"}}`` as returned by ``nst_jax.load_vgg19`` (or
        :func:`prepare_params`'d).
      images: ``(H, W, 3)`` or ``(N, H, W, 3)`` float RGB in [0, 1].
      layers: names of the layers to return (see ``LAYERS``).
      pooling: ``"max"`` or ``"avg"``.

    Returns:
      ``{layer: (h, w, c)}`` or ``{layer: (N, h, w, c)}`` activations; conv outputs are after
      ReLU.
    """
    layers = check_layers(layers)
    if images.ndim == 3:
        return image_features(params, images, layers, pooling)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) images, got {tuple(images.shape)}")
    return jax.vmap(lambda im: image_features(params, im, layers, pooling))(images)


def random_params(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Random VGG19 params with He-normal kernels, for tests and benchmarks.

    He scaling keeps activations of a similar size through all 16 ReLU layers, so tests exercise
    realistic magnitudes instead of values that vanish or overflow.

    Returns:
      ``{layer: {"kernel": (3, 3, in, out), "bias": (out,)}}`` float32 NumPy arrays.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, (kernel_shape, bias_shape) in conv_shapes().items():
        fan_in = kernel_shape[0] * kernel_shape[1] * kernel_shape[2]
        kernel = rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel_shape).astype(np.float32)
        bias = rng.normal(0.0, 0.1, bias_shape).astype(np.float32)
        params[name] = {"kernel": kernel, "bias": bias}
    return params
