"""Feature extractors: the network whose features an objective compares, chosen by name.

An extractor maps one image, ``(H, W, 3)`` float RGB in [0, 1], to the features of the
layers asked for: ``features(params, image, layers) -> {layer: (h, w, c)}``, with its own
layer names. ``ObjectiveConfig(extractor=name)`` chooses one; :func:`register_extractor`
adds one, so ``make_targets``, ``loss_fn``, ``stylize``, the metrics and Johnson training
run on it unchanged.

Built in: ``"vgg19"`` (the tutorial's) and ``"vgg16"``, Keras' networks with their
official weights (:mod:`nst_jax.core.vgg`). A network of the VGG family is given by its
blocks: nst_jax builds it, knows its params' shapes and its receptive fields, so runs on
it may also be tiled, split by rows, masked, pooled by average and computed by Winograd's
convolution. An extractor of your own runs untiled, unmasked and with its own pooling;
each of those is refused in one line rather than done wrongly.

Params are checked against the extractor where they enter the objective (:func:`extract`,
at trace time: shapes only), so another network's params are one line naming the layer,
not an error deep in Flax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from nst_jax.core import layers as vgg_layers
from nst_jax.core import vgg
from nst_jax.core.layers import Blocks
from nst_jax.core.style_terms import same_parts


class Extractor(NamedTuple):
    """One feature extractor.

    Attributes:
      features: ``(params, image (H, W, 3) in [0, 1], layers: tuple) -> {layer: (h, w, c)}``
        for one image (batches are ``jax.vmap``'d); ``None`` for a VGG network, which
        nst_jax builds from ``blocks``.
      layers: every layer name it can return, in network order.
      param_shapes: ``{layer: {leaf: shape}}`` its params must have (checked where they
        enter), or ``None``: not checked.
      blocks: for a VGG network, ``((convs, filters), ...)`` (:mod:`nst_jax.core.layers`):
        its receptive fields are then known.
    """

    features: Callable[..., Mapping[str, Any]] | None
    layers: tuple[str, ...]
    param_shapes: Mapping[str, Mapping[str, tuple[int, ...]]] | None = None
    blocks: Blocks | None = None


class FeatureSpec(NamedTuple):
    """What :func:`extract` reads of a config, hashable (a static argument of jitted
    feature functions)."""

    extractor: str = "vgg19"
    pooling: str = "max"
    remat: bool = False


def feature_spec(config: Any) -> FeatureSpec:
    """``config``'s extractor, pooling and ``remat``, alone."""
    return FeatureSpec(getattr(config, "extractor", "vgg19"), config.pooling, config.remat)


def vgg_extractor(blocks: Blocks) -> Extractor:
    """The VGG network of ``blocks`` as an extractor."""
    shapes = {
        name: {"kernel": kernel, "bias": bias}
        for name, (kernel, bias) in vgg_layers.conv_shapes(blocks).items()
    }
    return Extractor(None, vgg_layers.network_layers(blocks), shapes, blocks)


_EXTRACTORS: dict[str, Extractor] = {
    "vgg19": vgg_extractor(vgg_layers.VGG19_BLOCKS),
    "vgg16": vgg_extractor(vgg_layers.VGG16_BLOCKS),
}
BUILT_IN: tuple[str, ...] = tuple(_EXTRACTORS)
# What only a network of known receptive fields can do, for the refusals.
KNOWN_FIELDS = "vgg19 or vgg16"


def register_extractor(name: str, extractor: Extractor) -> None:
    """Make ``extractor`` available as ``ObjectiveConfig(extractor=name)``.

    Registering the same extractor again under its name does nothing (a cell run twice).

    Raises:
      ValueError: ``name`` is built in, not an identifier, or taken by another extractor;
        ``features`` is not callable, or ``layers`` are not distinct names.
    """
    if name in BUILT_IN:
        raise ValueError(f"extractor {name!r} is built in; register yours under another name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"an extractor's name is an identifier, got {name!r}")
    extractor = _checked(name, Extractor(*extractor))
    if name in _EXTRACTORS and not same_parts(_EXTRACTORS[name], extractor):
        raise ValueError(f"extractor {name!r} is registered already, as another extractor")
    _EXTRACTORS[name] = extractor


def _checked(name: str, extractor: Extractor) -> Extractor:
    if extractor.blocks is not None:
        return vgg_extractor(tuple(tuple(int(v) for v in b) for b in extractor.blocks))
    if not callable(extractor.features):
        raise ValueError(f"extractor {name!r}: features must be a callable")
    names = tuple(extractor.layers) if not isinstance(extractor.layers, str) else ()
    if (
        not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) < len(names)
    ):
        raise ValueError(f"extractor {name!r}: layers must be distinct names, got {names!r}")
    shapes = extractor.param_shapes
    if shapes is not None:
        try:
            shapes = {
                str(layer): {
                    str(leaf): tuple(int(d) for d in shape) for leaf, shape in leaves.items()
                }
                for layer, leaves in dict(shapes).items()
            }
        except (TypeError, ValueError, AttributeError):
            raise ValueError(
                f"extractor {name!r}: param_shapes must be {{layer: {{leaf: shape}}}}"
            ) from None
    return extractor._replace(layers=names, param_shapes=shapes)


def extractor(name: str) -> Extractor:
    """The extractor registered as ``name``.

    Raises:
      ValueError: no such extractor.
    """
    if name not in _EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; known: {', '.join(names())}")
    return _EXTRACTORS[name]


def names() -> tuple[str, ...]:
    """Every registered extractor's name, the built-in ones first."""
    return tuple(_EXTRACTORS)


def network(name: str, needs: str = "this") -> tuple[str, ...]:
    """The layers, in order, of extractor ``name`` when its receptive fields are known (a
    VGG network), for :mod:`nst_jax.core.geometry`.

    Raises:
      ValueError: ``name`` is an extractor of unknown receptive fields: ``needs`` (what asks,
        for the message) needs vgg19 or vgg16.
    """
    found = extractor(name)
    if found.blocks is None:
        raise ValueError(
            f"{needs} needs an extractor of known receptive fields ({KNOWN_FIELDS}), not {name}"
        )
    return found.layers


def has_known_fields(name: str) -> bool:
    """Whether extractor ``name`` is a VGG network (receptive fields known)."""
    return extractor(name).blocks is not None


def check_layers(name: str, layers: Sequence[str]) -> tuple[str, ...]:
    """``layers`` as a tuple, or ``ValueError`` naming those extractor ``name`` lacks."""
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    known = extractor(name).layers
    unknown = [layer for layer in layers if layer not in known]
    if unknown:
        raise ValueError(
            f"unknown {name} layer(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}"
        )
    return layers


def check_params(name: str, params: Any, layers: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` in one line unless ``params`` fit extractor ``name`` (shapes
    only, so it also runs while tracing): for a VGG network every conv layer up to the
    deepest of ``layers`` (all of them with ``None``), its ``bias`` and its ``kernel`` (or
    its Winograd transform, :func:`nst_jax.prepare_params`); for another, the
    ``param_shapes`` it declares."""
    found = extractor(name)
    if found.param_shapes is None:
        return
    expected, needed = dict(found.param_shapes), ""
    if found.blocks is not None:
        last = len(found.layers) if layers is None else 1 + max(map(found.layers.index, layers))
        wanted = set(found.layers[:last])
        expected = {layer: leaves for layer, leaves in expected.items() if layer in wanted}
        needed = "" if layers is None else f" (needed for {found.layers[last - 1]})"
    if not isinstance(params, Mapping):
        raise ValueError(
            f"params: expected {{layer: {{leaf: array}}}}, got {type(params).__name__}"
        )
    if found.blocks is not None and (other := _other_network(params, name)):
        raise ValueError(f"params: these are {other}'s params; give extractor={other!r}")
    for layer, leaves in expected.items():
        given = params.get(layer)
        if not isinstance(given, Mapping):
            raise ValueError(
                f"params: no {layer} for extractor {name}{needed}{_why_missing(params)}"
            )
        for leaf, shape in leaves.items():
            if leaf == "kernel" and "winograd" in given:
                continue  # transformed by prepare_params: its bias still names the layer's shape
            if leaf not in given:
                raise ValueError(f"params: {layer} has no {leaf} (extractor {name})")
            if tuple(np.shape(given[leaf])) != shape:
                raise ValueError(
                    f"params: {layer} {leaf} has shape {tuple(np.shape(given[leaf]))}, "
                    f"extractor {name} expects {shape}"
                )


def _other_network(params: Mapping, name: str) -> str | None:
    """The other built-in network whose layers ``params`` hold exactly, if any."""
    for other in BUILT_IN:
        if other != name and set(params) == set(extractor(other).param_shapes):
            return other
    return None


def _why_missing(params: Mapping) -> str:
    """Why a layer's params may be missing: prepared for fewer layers, or another network."""
    prepared = any(isinstance(v, Mapping) and "winograd" in v for v in params.values())
    if prepared:
        return (
            ": prepare_params(layers=...) left it out; give layers that include it, or "
            "layers=None to keep every layer"
        )
    return ": params of another network? load them with its own loader"


def extract(
    params: Any,
    image: jax.Array,
    layers: Sequence[str],
    config: Any,
    crops: tuple = (),
    row_axis: str | None = None,
) -> dict[str, jax.Array]:
    """``{layer: (h, w, c)}`` features of one image from ``config.extractor``, the one
    place every objective reads features from.

    Args:
      params: the extractor's params (checked: :func:`check_params`).
      image: ``(H, W, 3)`` float RGB in [0, 1].
      layers: the layers to return.
      config: an ``ObjectiveConfig`` (or ``StyleConfig``): ``extractor``, ``pooling`` and
        ``remat``.
      crops: a tile's window per layer (:func:`nst_jax.core.geometry.plan_window`); VGG only.
      row_axis: the ``shard_map`` axis the rows are split over (:mod:`nst_jax.run.rows`);
        VGG only.
    """
    name = getattr(config, "extractor", "vgg19")
    found = extractor(name)
    layers = check_layers(name, layers)
    check_params(name, params, layers)
    if found.blocks is not None:
        # Through the module's attribute, so that a patched image_features is seen (tests).
        return vgg.image_features(
            params, image, layers, config.pooling, config.remat, crops, row_axis, found.blocks
        )
    if crops or row_axis is not None:
        network(name, "a tiled or row-split run")
    features = found.features
    if config.remat:
        features = jax.checkpoint(features, static_argnums=(2,))
    out = features(params, image, layers)
    return {layer: _checked_map(name, layer, out) for layer in layers}


def _checked_map(name: str, layer: str, out: Any) -> jax.Array:
    """Extractor ``name``'s map of ``layer`` from its output, or ``ValueError``."""
    value = out.get(layer) if isinstance(out, Mapping) else None
    if value is None or np.ndim(value) != 3:
        shape = None if value is None else tuple(np.shape(value))
        raise ValueError(
            f"extractor {name} must return {{layer: (h, w, c)}} for each layer asked; "
            f"{layer} is {shape}"
        )
    if 0 in np.shape(value):
        raise ValueError(f"extractor {name}: {layer}'s map is empty for this image size")
    return value
