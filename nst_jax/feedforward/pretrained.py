"""Applying the imported Magenta networks (:mod:`.magenta`, :mod:`.mobilenet`): their
settings read from a model record, the params they need, and one forward pass per batch.

- ``magenta26``: the condition is a weight per style, picked by index (``style_index``)
  and mixed by ``weights`` (normalised to sum 1: the paper's convex combination).
- ``arbitrary``: the condition is a style vector, predicted once per style image (centre
  square, resized to 256 x 256: Magenta's ``center_crop_resize_image``); several are mixed
  by ``weights``, and ``alpha`` moves from the content's own vector (0) to the style's (1),
  as Magenta's interpolation does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core.fields import check_count
from nst_jax.core.targets import check_image
from nst_jax.feedforward.magenta import METHODS, MagentaSettings, StyleTransformer
from nst_jax.feedforward.mobilenet import STYLE_SIZE, StylePredictor


def settings_from_record(architecture: Any) -> MagentaSettings:
    """The :class:`MagentaSettings` of a record's ``architecture`` (untrusted JSON).

    Raises:
      ValueError, TypeError, KeyError: a damaged architecture.
    """
    if not isinstance(architecture, dict):
        raise TypeError("architecture is not a mapping")
    names = {"method", "contract", "expand", "residual_blocks", "condition"}
    if set(architecture) != names:
        raise KeyError(f"architecture needs exactly {sorted(names)}")
    fields = dict(architecture)
    for key in ("contract", "expand"):
        if not isinstance(fields.get(key), list):
            raise TypeError(f"{key} is not a list")
        fields[key] = tuple(fields[key])
    return MagentaSettings(**fields)


def expected_params(settings: MagentaSettings) -> dict:
    """The params tree (shapes and dtypes) an imported model of ``settings`` holds."""
    key = jax.random.key(0)
    condition = jnp.zeros((settings.condition,), jnp.float32)
    image = jnp.zeros((16, 16, 3), jnp.float32)
    tree = {"transformer": jax.eval_shape(StyleTransformer(settings).init, key, image, condition)}
    if settings.method == "arbitrary":
        style = jnp.zeros((64, 64, 3), jnp.float32)
        tree["predictor"] = jax.eval_shape(StylePredictor(settings.condition).init, key, style)
    return tree


def check_style_indices(indices: int | Sequence[int], count: int) -> list[int]:
    """``indices`` as a list of distinct styles of a network of ``count`` styles: the one
    rule for a ``magenta26`` model's ``style_index``, in Python and on the command line.

    Raises:
      TypeError: not an integer or a list of them.
      ValueError: none, one outside 0 to ``count - 1``, or one given twice (named).
    """
    check_count("count", count)
    if isinstance(indices, (str, bytes, bytearray, memoryview, dict)) or not (
        isinstance(indices, (int, np.integer)) or np.ndim(indices) == 1
    ):
        raise TypeError(f"style_index must be an integer or a list of them, got {indices!r}")
    indices = [indices] if np.ndim(indices) == 0 else list(indices)
    if not indices:
        raise ValueError("style_index: a magenta26 model needs at least one style index")
    for index in indices:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"style_index must hold integers, got {index!r}")
        if not 0 <= index < count:
            raise ValueError(f"style_index {index}: this network has styles 0 to {count - 1}")
    indices, seen = [int(index) for index in indices], set()
    for index in indices:
        if index in seen:
            raise ValueError(f"style_index {index}: given twice")
        seen.add(index)
    return indices


def style_weights(settings: MagentaSettings, indices: Sequence[int], weights=None) -> np.ndarray:
    """The ``magenta26`` condition: ``weights`` (``None``: equal) on the styles ``indices``.

    Raises:
      TypeError, ValueError: bad indices (:func:`check_style_indices`) or weights (named).
    """
    count = settings.condition
    indices = check_style_indices(indices, count)
    mix = mix_weights(weights, len(indices))
    condition = np.zeros(count, np.float64)
    condition[indices] = mix
    return condition


def mix_weights(weights, count: int) -> np.ndarray:
    """One weight per style (``None``: equal), finite and >= 0 with a positive sum,
    normalised to sum 1."""
    if weights is None:
        return np.full(count, 1.0 / count)
    try:
        weights = np.asarray(weights, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be numbers, got {weights!r}") from None
    if weights.shape != (count,):
        raise ValueError(f"weights: one per style, {count}, got shape {weights.shape}")
    with np.errstate(over="ignore"):
        total = weights.sum()
    if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and 0 < total < np.inf):
        raise ValueError(
            f"weights must be finite numbers >= 0 with a finite sum > 0, got {weights}"
        )
    return weights / total


def centre_square(image: jax.Array, size: int = STYLE_SIZE) -> jax.Array:
    """The centred square of ``(H, W, 3)``, resized to ``size`` (bilinear, antialiased)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    return jax.image.resize(square, (size, size, image.shape[2]), "linear")


@jax.jit
def _predict(params: Any, image: jax.Array) -> jax.Array:
    return StylePredictor(params["bottleneck"]["kernel"].shape[1]).apply(
        {"params": params}, centre_square(image)
    )


def predict_styles(params: Any, styles: Sequence[jax.Array]) -> list[jax.Array]:
    """The style vector of each ``(h, w, 3)`` style image (any size), with the predictor's
    ``params`` (an ``arbitrary`` model's ``params["predictor"]["params"]``).

    Raises:
      ValueError: a style that is not an RGB image in [0, 1], named.
    """
    checked = [check_image(s, f"styles[{k}]") for k, s in enumerate(styles)]
    for k, style in enumerate(checked):
        if 0 in style.shape[:2]:
            raise ValueError(f"styles[{k}]: no pixels, shape {tuple(style.shape)}")
    return [_predict(params, style) for style in checked]


@functools.partial(jax.jit, static_argnums=(0, 1))
def transform(settings: MagentaSettings, conv: str, params: Any, contents, conditions):
    """``(N, H, W, 3)`` contents, each with its condition ``(N, D)``, stylised (any ``H``,
    ``W``: reflected up to multiples of 4 and cropped back)."""
    network = StyleTransformer(settings, conv)

    def one(content, condition):
        height, width = content.shape[:2]
        pad = ((0, -height % 4), (0, -width % 4), (0, 0))
        padded = jnp.pad(content, pad, mode="reflect" if min(height, width) > 1 else "edge")
        return network.apply(params, padded, condition)[:height, :width]

    return jax.vmap(one)(contents, conditions)


def conditions(model, contents, style_index, styles, weights, alpha, vectors) -> jax.Array:
    """Each content's condition ``(N, D)`` (module docstring): every content with the same
    styles, mixed by ``weights`` (:func:`set_conditions`, checked first)."""
    settings, count = model.settings, contents.shape[0]
    if settings.method == "magenta26":
        if styles or vectors is not None or alpha != 1.0:
            raise ValueError("a magenta26 model takes style_index, not styles or alpha")
        picked = style_weights(settings, style_index if style_index is not None else [], weights)
        picks = [list(np.flatnonzero(picked))] * count  # the checked indices, in order
        weights = picked[picks[0]] if count else None
        return set_conditions(model, contents, picks, (), weights, alpha)
    if style_index is not None:
        raise ValueError("style_index: an arbitrary model takes styles (images), not indices")
    predictor = model.params["predictor"]["params"]
    vectors = predict_styles(predictor, styles) if vectors is None else list(vectors)
    if not vectors:
        raise ValueError("styles: an arbitrary model needs at least one style")
    for k, vector in enumerate(vectors):
        vector = np.asarray(vector)
        if vector.shape != (settings.condition,) or not np.all(np.isfinite(vector)):
            raise ValueError(f"style_features[{k}]: needs a finite vector of shape "
                             f"({settings.condition},), got {vector.shape}")  # fmt: skip
    mix_weights(weights, len(vectors))  # checked here, with one style as with several
    picks = [list(range(len(vectors)))] * count
    return set_conditions(model, contents, picks, vectors, weights, alpha)


def set_conditions(model, contents, picks, vectors, blend, alpha: float) -> jax.Array:
    """Each content's condition for a batch whose items take different styles (a job's:
    one pass for the whole batch, whatever its style sets).

    Args:
      model: an imported model.
      contents: ``(N, H, W, 3)``.
      picks: per content, its styles: style indices (``magenta26``) or positions in
        ``vectors`` (``arbitrary``).
      vectors: ``arbitrary``: the job's style vectors (:func:`predict_styles`).
      blend: the weights of a set of several styles (``None``: equal).
      alpha: ``arbitrary``: 0 the content's own style vector, 1 the style's.
    """
    settings = model.settings
    if settings.method == "magenta26":
        rows = [style_weights(settings, pick, blend if len(pick) > 1 else None) for pick in picks]
        return jnp.asarray(np.stack(rows), contents.dtype)
    stacked = jnp.stack([jnp.asarray(v, contents.dtype) for v in vectors])
    mixes = np.zeros((len(picks), len(vectors)))
    for row, pick in enumerate(picks):
        mixes[row, list(pick)] = mix_weights(blend if len(pick) > 1 else None, len(pick))
    styles = jnp.asarray(mixes, contents.dtype) @ stacked
    if alpha == 1.0:
        return styles
    # The contents' own vectors, the batch in one call (they share a shape).
    own = jax.vmap(_predict, in_axes=(None, 0))(model.params["predictor"]["params"], contents)
    return alpha * styles + (1.0 - alpha) * own


def apply_pretrained(model, contents, style_index, styles, weights, alpha, vectors, conv):
    """:func:`nst_jax.feedforward.model.apply_model` for an imported model."""
    if model.settings.method not in METHODS:
        raise ValueError(f"not an imported model: {model.settings.method}")
    condition = conditions(model, contents, style_index, styles, weights, alpha, vectors)
    params = model.params["transformer"]
    return transform(model.settings, conv, params, contents, condition)
