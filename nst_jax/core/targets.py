"""The targets of one image's objective: the content's features, the style's statistics
(Gram matrices for the tutorial's loss, or a blend of several styles', or one per region of
a masked run) and the term weights, as the pytree :mod:`nst_jax.core.objective` describes.

Made once before the loop (:func:`make_targets`); every function here is per image and
pure, the feature extraction jitted.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import extractors, geometry, losses, vgg
from nst_jax.core.extractors import FeatureSpec, feature_spec
from nst_jax.core.fields import check_config
from nst_jax.core.objective import (
    WEIGHT_FIELDS,
    ObjectiveConfig,
    Params,
    used_layers,
)
from nst_jax.core.style_terms import style_term

# Images are compared with [0, 1] allowing rounding of this much (a resize in float32).
RANGE_SLACK = 1e-5
# A style is a target only, never optimised or clipped: it may leave [0, 1] a little (a style
# whose colours were matched to the content's does), but not as far as 0-255 values do.
STYLE_RANGE = (-1.0, 2.0)


def check_image(image, what: str = "image", batched: bool = False) -> jax.Array:
    """``image`` as a JAX array, or ``ValueError`` in one line naming ``what``: RGB in
    [0, 1] with floating-point values, ``(H, W, 3)`` (or ``(N, H, W, 3)`` when ``batched``),
    finite; a style (``what`` starting "style") within :data:`STYLE_RANGE`. Values are
    checked only when concrete (not under a transformation)."""
    given = image
    image = jnp.asarray(image)
    shapes = "(H, W, 3) or (N, H, W, 3)" if batched else "(H, W, 3)"
    if image.ndim not in ((3, 4) if batched else (3,)):
        raise ValueError(f"{what}: expected {shapes} RGB, got shape {tuple(image.shape)}")
    if image.shape[-1] != 3:
        raise ValueError(f"{what}: expected 3 channels (RGB), got {image.shape[-1]}")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(
            f"{what}: expected floating-point RGB in [0, 1], got {image.dtype} (divide by 255)"
        )
    if image.dtype == jnp.float16:  # 65504 at most: VGG's features and Grams overflow
        raise ValueError(f"{what}: float16 overflows in VGG's features; give float32 (or float64)")
    lowest, highest = STYLE_RANGE if what.startswith("style") else (0.0, 1.0)
    check_values(given if isinstance(given, np.ndarray) else image, what, lowest, highest)
    return image


def check_values(values, what: str, lowest: float = 0.0, highest: float = 1.0) -> None:
    """Raise ``ValueError`` in one line naming ``what`` unless the concrete ``values`` (an
    image, a mask) are finite and within ``[lowest, highest]`` (up to float32 rounding of a
    resize, :data:`RANGE_SLACK`); traced values are not checked."""
    if isinstance(values, jax.core.Tracer) or np.size(values) == 0:
        return
    if isinstance(values, np.ndarray):  # read by NumPy: no program to compile
        low, high, finite = float(np.min(values)), float(np.max(values)), np.isfinite(values).all()
    else:
        low, high, finite = jax.device_get(_device_value_range(values))
    if not finite:
        raise ValueError(f"{what}: has non-finite values (NaN or infinity)")
    if low < lowest - RANGE_SLACK or high > highest + RANGE_SLACK:
        hint = " (0-255 values? divide by 255)" if high > 2 else ""
        raise ValueError(f"{what}: values must lie in [0, 1], got {low:g} to {high:g}{hint}")


@jax.jit
def _device_value_range(image: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lowest and highest value and whether all are finite, in one compiled program (three
    eager reductions would compile one program each for every new shape)."""
    return jnp.min(image), jnp.max(image), jnp.isfinite(image).all()


def min_side(config: ObjectiveConfig, style: bool = False) -> int:
    """The fewest pixels an image's sides need under ``config``: every layer it passes
    through a non-empty map, and each style layer's map the positions the style term
    compares (3 x 3 patches for MRF). ``style``: the style image, which passes through the
    style layers only."""
    layers = config.style_layers if style else used_layers(config)
    patch = style_term(config.style_loss).min_side
    if not extractors.has_known_fields(config.extractor):
        return patch  # an own extractor's maps are checked as they come (extractors.extract)
    network = extractors.network(config.extractor)
    smallest = geometry.smallest_side(config.style_layers, network)
    return max(geometry.smallest_side(layers, network), patch * smallest)


def too_small(width: int, height: int, need: int, at: str = "") -> str | None:
    """Why a ``width`` x ``height`` image (``at``: how it was scaled) is too small for
    layers that need both sides of ``need`` px (:func:`min_side`), or ``None``: the one rule
    of the run's, the job planner's and the scores' checks."""
    if min(width, height) >= need:
        return None
    return f"{width}x{height} px{at}; the layers used need both sides >= {need} px"


def check_size(config: ObjectiveConfig, shape: Sequence[int], what: str = "image", style=False):
    """Raise ``ValueError`` when an image of ``shape`` ``(..., H, W, 3)`` is too small for
    ``config`` (:func:`min_side`)."""
    if why := too_small(shape[-2], shape[-3], min_side(config, style)):
        raise ValueError(f"{what} is {why}")


@functools.partial(jax.jit, static_argnames=("layers", "spec", "statistic"))
def _features(
    params: Params, image: jax.Array, layers: tuple[str, ...], spec: FeatureSpec, statistic
):
    features = extractors.extract(params, image, layers, spec._replace(remat=False))
    if statistic is None:
        return features
    target = style_term(statistic).target
    return {name: target(f) for name, f in features.items()}


def style_targets(params: Params, style: jax.Array, config: ObjectiveConfig) -> dict[str, Any]:
    """``{layer: statistic}`` of one ``(h, w, 3)`` style image for ``config.style_loss``
    (jitted): ``(c, c)`` Gram matrices for the tutorial's loss."""
    style = jnp.asarray(style)
    check_size(config, style.shape, "style", style=True)
    extractors.check_params(config.extractor, params, config.style_layers)  # here, not traced
    return _features(params, style, config.style_layers, feature_spec(config), config.style_loss)


def content_features(
    params: Params, content: jax.Array, config: ObjectiveConfig
) -> dict[str, jax.Array]:
    """``{layer: (h, w, c)}`` features of one ``(H, W, 3)`` content image (jitted)."""
    content = jnp.asarray(content)
    check_size(config, content.shape, "content")
    extractors.check_params(config.extractor, params, config.content_layers)
    return _features(params, content, config.content_layers, feature_spec(config), None)


def resize_masks(masks: jax.Array, height: int, width: int) -> jax.Array:
    """``(K, H, W)`` masks at ``height x width`` (bilinear, antialiased when shrinking), in
    [0, 1]: a mask drawn at another size than its image is resized to the image's."""
    masks = jnp.asarray(masks)
    if masks.shape[-2:] == (height, width):
        return masks
    shape = (*masks.shape[:-2], height, width)
    return jnp.clip(jax.image.resize(masks, shape, method="linear", antialias=True), 0.0, 1.0)


def fit_masks(masks: Sequence, height: int, width: int) -> jax.Array:
    """Masks of any sizes (one ``(H', W')`` array each), each fitted to ``height x width``
    (:func:`resize_masks`), as one ``(K, height, width)`` array."""
    return jnp.stack([resize_masks(jnp.asarray(m)[None], height, width)[0] for m in masks])


def layer_masks(
    masks: jax.Array, layers: Sequence[str], extractor: str = "vgg19"
) -> dict[str, jax.Array]:
    """``{layer: (K, h, w)}``: ``(K, H, W)`` image-sized masks downsampled to each layer's
    resolution by 2x2 average pooling at each of the network's pools (Gatys et al. 2017
    downsample their guidance channels to each layer; pooling as the network does gives
    exactly the layer's size, odd sides included)."""
    network = extractors.network(extractor, "a masked run")
    pooled, out, done = masks[..., None], {}, 0
    for name in sorted(set(layers), key=network.index):
        for _ in range(geometry.pools_before((name,), network) - done):
            pooled = vgg.pool_2x2(pooled, "avg")
            done += 1
        out[name] = pooled[..., 0]
    return {name: out[name] for name in layers}


def check_masks(config: ObjectiveConfig, masks: jax.Array, n_styles: int) -> None:
    """Raise ``ValueError`` unless ``masks`` ``(K, H, W)`` can pair with ``n_styles`` styles."""
    reason = config.unmaskable()
    if reason is not None:
        raise ValueError(reason)
    extractors.network(config.extractor, "a masked run")
    if masks.ndim != 3:
        raise ValueError(f"masks: expected (K, H, W), got shape {tuple(masks.shape)}")
    if masks.shape[0] != n_styles:
        raise ValueError(f"got {masks.shape[0]} masks for {n_styles} styles; give one each")
    check_values(masks, "masks")  # each pixel's weight in its region


@functools.partial(jax.jit, static_argnames=("layers", "spec"))
def _guided_style(params: Params, style, mask, layers: tuple[str, ...], spec: FeatureSpec):
    features = extractors.extract(params, style, layers, spec._replace(remat=False))
    masks = layer_masks(mask[None], layers, spec.extractor)
    return {name: losses.guided_gram(f, masks[name][0]) for name, f in features.items()}


def masked_style_targets(
    params: Params, style: jax.Array, config: ObjectiveConfig, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """:func:`style_targets`, the Grams taken over the region ``mask`` ``(h', w')`` of the
    style image only (resized to the style's size); ``None``: the whole style."""
    if mask is None:
        return style_targets(params, style, config)
    style = jnp.asarray(style)
    check_size(config, style.shape, "style", style=True)
    check_values(jnp.asarray(mask, style.dtype), "style_masks")
    mask = resize_masks(jnp.asarray(mask, style.dtype)[None], *style.shape[:2])[0]
    return _guided_style(params, style, mask, config.style_layers, feature_spec(config))


def blend_grams(grams: Sequence[Mapping[str, jax.Array]], weights: Sequence[float] | None):
    """``sum_k w_k G_k / sum_k w_k`` per layer: one style target from several styles.

    Weights ``(1, 0)`` give the first style's Grams exactly (``x * 1 + y * 0 == x``).
    """
    if weights is None:
        (only,) = grams
        return only
    total = sum(weights)
    return jax.tree.map(
        lambda *g: sum(w / total * x for w, x in zip(weights, g, strict=True)), *grams
    )


def term_weights(config: ObjectiveConfig, dtype=jnp.float32) -> dict[str, jax.Array]:
    """``{"content", "style", "tv"}`` weights of one setting as scalars.

    Raises:
      ValueError: ``config`` sweeps a weight (one value per image): give each image's value.
    """
    if config.sweep_size is not None:
        raise ValueError("this config sweeps its settings: make targets per setting")
    return {
        term: jnp.asarray(getattr(config, field), dtype) for term, field in WEIGHT_FIELDS.items()
    }


RESERVED = ("content", "style", "weights", "masks", "key")
# The stream of a seed the objective draws from; the seed's key itself draws the noise that
# a run may start from (nst_jax.run.inputs.initial_images).
OBJECTIVE_STREAM = 1


def objective_key(seed: int) -> jax.Array:
    """The PRNG key an image's objective draws from, for ``seed``: stream 1 of
    ``jax.random.key(seed)`` (the key itself draws a noise start)."""
    return jax.random.fold_in(jax.random.key(seed), OBJECTIVE_STREAM)


def step_targets(targets: Mapping[str, Any], t: int | jax.Array) -> Mapping[str, Any]:
    """``targets`` as the loss of step ``t`` sees them: ``"key"`` replaced by
    ``fold_in(key, t)``, so every step draws anew and step ``t`` draws the same whenever it
    runs (resumed, in any batch); unchanged without a key."""
    if "key" not in targets:
        return targets
    return {**targets, "key": jax.random.fold_in(targets["key"], t)}


def make_targets(
    params: Params,
    content: jax.Array,
    style: jax.Array | Sequence[jax.Array],
    config: ObjectiveConfig,
    *,
    masks: jax.Array | None = None,
    style_masks: Sequence[jax.Array | None] | None = None,
    key: jax.Array | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Targets of one image: the content's features, the style's Grams, the term weights.

    Args:
      params: the extractor's params (VGG19's by default: ``nst_jax.load_vgg19``), direct or
        :func:`nst_jax.prepare_params`'d.
      content: ``(H, W, 3)`` float RGB in [0, 1].
      style: ``(h, w, 3)`` float RGB in [0, 1] (any size: Grams do not depend on it); with
        ``config.style_blend`` the K styles to blend; with ``masks`` the K styles of the
        regions.
      config: extractor, layers, pooling, term weights, blend, ``style_weights`` (single
        values, not a sweep).
      masks: ``(K, H, W)`` content regions in [0, 1], the k-th styled like the k-th style
        (resized to the content's size if drawn at another); ``config.style_weights`` weight
        the regions. Pixels outside every region keep the content. Gram loss only.
      style_masks: with ``masks``, K entries: ``(h', w')`` the region of that style image
        whose Grams are matched (resized to the style's size), or ``None`` for all of it.
      key: a PRNG key for a random style term or a custom loss (``targets["key"]``; the step
        folds in its index: :func:`step_targets`). Default: none, except for a random style
        term, which gets :func:`objective_key` of ``config.seed`` (0 without one).
      extra: more entries for a custom loss, passed untouched (not the names above).

    Returns:
      ``{"content": {layer: (h, w, c)}, "style": {layer: statistic}, "weights": {...}}``;
      the statistic is ``config.style_loss``'s: ``(c, c)`` Grams for the tutorial's. With
      masks, ``(K, c, c)`` Grams and ``"masks"`` (see the module's docstring); ``"key"``
      and the ``extra`` entries where given.
    """
    check_config(config, ObjectiveConfig)
    content = check_image(content, "content")
    several = masks is not None or config.style_blend is not None
    if several and not isinstance(style, (list, tuple)) and np.ndim(style) != 4:
        raise TypeError(
            "style: give the styles as a list or a (K, h, w, 3) array (one per blend weight "
            "or mask)"
        )
    style = [check_image(s, "style") for s in style] if several else check_image(style, "style")
    if config.style_blend is not None:
        config.check_style_count(len(style))
    if masks is not None and style_masks is not None and len(style_masks) != len(style):
        raise ValueError(f"style_masks has {len(style_masks)} entries for {len(style)} styles")
    extra = checked_extra(extra)
    weights = term_weights(config, content.dtype)
    targets = {"content": content_features(params, content, config), "weights": weights}
    if masks is not None:
        targets = _masked(params, targets, content, style, config, masks, style_masks)
    else:
        styles = list(style) if config.style_blend is not None else [style]
        grams = blend_grams([style_targets(params, s, config) for s in styles], config.style_blend)
        if config.style_weights is not None:
            (own,) = config.style_weights  # one style: its own weight multiplies the term's
            weights = {**weights, "style": weights["style"] * own}
        targets = {**targets, "style": grams, "weights": weights}
    if key is None and style_term(config.style_loss).random:
        seed = getattr(config, "seed", 0)
        if isinstance(seed, tuple):
            raise ValueError("config sweeps seed: make each image's targets with its own key")
        key = objective_key(seed)
    return {**targets, **({} if key is None else {"key": checked_key(key)}), **extra}


def _masked(params, targets, content, styles, config, masks, style_masks) -> dict:
    """:func:`make_targets`' entries of a masked run."""
    styles = list(styles)
    masks = jnp.asarray(masks, content.dtype)
    check_masks(config, masks, len(styles))
    masks = resize_masks(masks, *content.shape[:2])
    style_masks = list(style_masks) if style_masks is not None else [None] * len(styles)
    grams = [
        masked_style_targets(params, s, config, m) for s, m in zip(styles, style_masks, strict=True)
    ]
    regions = config.style_weights or (1.0,) * len(styles)
    weights = targets["weights"]
    return {
        **targets,
        "style": stack_trees(grams),
        "masks": layer_masks(masks, config.style_layers, config.extractor),
        "weights": {**weights, "regions": jnp.asarray(regions, content.dtype)},
    }


def stack_trees(trees: Sequence[Any]) -> Any:
    """Pytrees of one structure stacked leaf by leaf on a new leading axis (per-image
    targets into a batch's, each region's statistics into a masked run's), in one compiled
    program; one pytree given for every row (a batch's one style) is broadcast, which
    compiles faster than a stack (scripts/README.md, "Test suite"). Stacked eagerly, each
    leaf's shape would compile a program of its own."""
    if not isinstance(trees, (list, tuple)):
        raise TypeError(f"stack_trees: trees must be a list or tuple, got {type(trees).__name__}")
    if not trees:
        raise ValueError("stack_trees: no pytrees to stack")
    if all(tree is trees[0] for tree in trees):
        return _broadcast_tree(trees[0], len(trees))
    return _stack_tree(trees)


@functools.partial(jax.jit, static_argnums=1)
def _broadcast_tree(tree: Any, rows: int) -> Any:
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (rows, *leaf.shape)), tree)


@jax.jit
def _stack_tree(trees: list) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def checked_key(key: Any) -> jax.Array:
    """``key`` as a typed PRNG key (a raw ``uint32`` key is wrapped), or ``ValueError``."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    try:
        return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    except (TypeError, ValueError):
        raise ValueError(f"key: expected a PRNG key (jax.random.key(seed)), got {key!r}") from None


def checked_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``extra`` as a dict whose names are not the targets' own, or ``ValueError``."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise ValueError(f"extra: expected a dict of named targets, got {type(extra).__name__}")
    taken = [name for name in extra if name in RESERVED or not isinstance(name, str)]
    if taken:
        raise ValueError(
            f"extra: {taken[0]!r} is a name of the targets' own ({', '.join(RESERVED)})"
        )
    return dict(extra)
