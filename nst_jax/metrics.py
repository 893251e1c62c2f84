"""Scores that compare results, so that methods (optimisation, feed-forward networks) can be
set side by side on the same images.

- Feature distances between any two images, per layer, unweighted, on any registered
  extractor: the content distance (mean squared feature difference), and the distance of
  every registered style term (:mod:`nst_jax.core.style_terms`: Gram matrices, means and
  standard deviations, Wasserstein-2, sliced Wasserstein, ... and plug-ins' own).
- CFSD, the content-feature structural distance of StyleID's evaluation (:func:`cfsd`).
- LPIPS (:func:`lpips`), FID on ArtFID's Inception features (:func:`fid`,
  :func:`inception_features`) and ArtFID itself (:func:`art_fid`), with the weights of
  ``nst-jax weights fetch lpips`` and ``... artfid`` (:mod:`nst_jax.files.score_weights`).
- SSIM and PSNR, from dm-pix (DeepMind's image library for JAX; the ``metrics`` extra):
  well-tested implementations of the standard definitions, rather than another copy.
- The warping error measures flicker: how far each stylised frame is from the previous one
  carried along the motion, over the pixels the flow can be trusted at (Lai et al.,
  "Learning Blind Video Temporal Consistency", ECCV 2018, their E_warp).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import extractors, inception, style_terms, temporal
from nst_jax.core import lpips as lpips_net
from nst_jax.core.fields import as_count
from nst_jax.core.objective import CONTENT_LAYERS, STYLE_LAYERS, ObjectiveConfig, Params
from nst_jax.core.targets import check_image, min_side, too_small
from nst_jax.errors import InputError


class ImageTooSmallError(InputError):
    """An image with a side under ``need`` px, the fewest for non-empty maps of a score's
    layers (a ``ValueError``, as every refused argument here)."""

    def __init__(self, message: str, need: int) -> None:
        super().__init__(message)
        self.need = need


def _numeric(value: Any, name: str) -> Any:
    """``value`` unchanged, or ``TypeError`` naming ``name`` when it is not numbers (a
    string or an object would otherwise fail inside JAX or NumPy, naming neither)."""
    try:  # arrays and tracers by their dtype: not copied to the host
        dtype = value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype
    except (TypeError, ValueError):  # ragged nesting
        dtype = np.dtype(object)
    if not jnp.issubdtype(dtype, jnp.number):
        raise TypeError(f"{name}: expected numbers (an array or one), got {type(value).__name__}")
    return value


def _checked_array(value: Any, name: str, shape: tuple[int, ...], like: str) -> jax.Array:
    """``value`` as a JAX array of ``shape`` (``like``'s), finite where concrete; else
    ``TypeError`` (not numbers) or ``ValueError`` (shape, NaN or infinity) naming ``name``."""
    array = jnp.asarray(_numeric(value, name))
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} to match {like}, got {array.shape}")
    if not isinstance(array, jax.core.Tracer) and not bool(jnp.isfinite(array).all()):
        raise ValueError(f"{name}: has non-finite values (NaN or infinity)")
    return array


def checked_pair(a, b, same_size: bool = True, smallest: int = 1) -> tuple[jax.Array, jax.Array]:
    """Two ``(H, W, 3)`` float images in [0, 1], finite (:func:`~nst_jax.core.targets.
    check_image`), of one size where ``same_size``, with sides of at least ``smallest``.

    Raises:
      TypeError: ``a`` or ``b`` is not numbers.
      ValueError: naming ``a`` or ``b`` and what is wrong.
    """
    a, b = (check_image(_numeric(x, name), name) for x, name in ((a, "a"), (b, "b")))
    if same_size and a.shape != b.shape:
        raise ValueError(f"a and b must be one size, got {tuple(a.shape)} and {tuple(b.shape)}")
    for name, x in (("a", a), ("b", b)):
        if min(x.shape[:2]) < smallest:
            raise ValueError(f"{name}: sides of at least {smallest} px needed, got {x.shape[:2]}")
    return a, b


def _features(
    params: Params, images: dict[str, jax.Array], layers: Sequence[str], extractor: str
) -> list[dict]:
    """Each of ``images``' features (``{argument name: image}``), after every check."""
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers must be a non-empty sequence of layer names, got {layers!r}")
    layers, spec = tuple(layers), extractors.FeatureSpec(extractor)
    # Checked before tracing, so that a bad layer or params get the library's own message.
    extractors.check_params(extractor, params, extractors.check_layers(extractor, layers))
    # The stylize command's own bound: an empty map's mean is nan, not a distance.
    need = min_side(
        ObjectiveConfig(extractor=extractor, content_layers=layers, style_layers=layers)
    )
    for name, x in images.items():
        if why := too_small(x.shape[1], x.shape[0], need):
            raise ImageTooSmallError(f"{name} is {why}", need)
    # One compiled forward pass per image size, not an operation at a time: a folder's
    # scores reuse it for every image of that size.
    return [_extract(params, x, layers, spec) for x in images.values()]


_extract = jax.jit(extractors.extract, static_argnums=(2, 3))


def content_distance(
    params: Params,
    a: jax.Array,
    b: jax.Array,
    layers: Sequence[str] = CONTENT_LAYERS,
    extractor: str = "vgg19",
) -> dict[str, jax.Array]:
    """``{layer: mean((F_l(a) - F_l(b))^2)}`` for two ``(H, W, 3)`` images of one size, on
    the features of ``extractor`` (a registered name, :func:`nst_jax.register_extractor`).

    Raises:
      TypeError, ValueError: a bad argument, named (:class:`ImageTooSmallError`: a side under
        the layers' :func:`~nst_jax.core.targets.min_side`).
    """
    a, b = checked_pair(a, b)
    fa, fb = _features(params, {"a": a, "b": b}, layers, extractor)
    return {layer: jnp.mean((fa[layer] - fb[layer]) ** 2) for layer in layers}


def style_distances(
    params: Params,
    a: jax.Array,
    b: jax.Array,
    layers: Sequence[str] = STYLE_LAYERS,
    extractor: str = "vgg19",
    terms: Sequence[str] | None = None,
) -> dict[str, dict[str, jax.Array]]:
    """Per style term and layer, the distance between two images' styles (any sizes):
    ``{term: {layer: d}}`` for every registered term (:func:`nst_jax.register_style_term`,
    built-in or a plug-in's), or those named in ``terms``.

    ``d`` is the term's own loss on that layer alone, at weight 1: ``mean((G_a - G_b)^2)``
    for ``gram``, ``W2(N_a, N_b)^2`` for ``w2``, and so on. ``b`` is the style: its
    statistic is the term's target. A term that draws random directions (``sw``) gets the
    fixed key ``fold_in(key(0), i)`` for the i-th layer, so scores are repeatable. A layer
    smaller than a term's ``min_side`` (``mrf``'s 3x3 patches) gives ``nan``.

    Raises:
      TypeError, ValueError: a bad argument, named (an empty ``terms``;
        :class:`ImageTooSmallError`: an image with an empty map at one of ``layers``).
    """
    a, b = checked_pair(a, b, same_size=False)
    if isinstance(terms, str) or not (terms is None or isinstance(terms, Sequence)):
        raise ValueError(f"terms must be a sequence of term names, got {terms!r}")
    names = tuple(style_terms.names() if terms is None else terms)
    if not names:
        raise ValueError("terms must name at least one style term, got none")
    chosen = {name: style_terms.style_term(name) for name in names}
    fa, fb = _features(params, {"a": a, "b": b}, layers, extractor)
    return {
        name: {
            layer: _term_distance(term, fa[layer], fb[layer], i) for i, layer in enumerate(layers)
        }
        for name, term in chosen.items()
    }


def _term_distance(term: style_terms.StyleTerm, fa, fb, index: int) -> jax.Array:
    if min(*fa.shape[:2], *fb.shape[:2]) < term.min_side:
        return jnp.array(jnp.nan, fa.dtype)
    keys = {"key": jax.random.fold_in(jax.random.key(0), index)} if term.random else {}
    statistic, target = {"l": term.statistic(fa)}, {"l": term.target(fb)}
    return term.loss(statistic, target, 1.0, None, **keys)


CFSD_LAYER = "block3_conv1"  # relu3_1 of VGG, as StyleID's evaluation reads it


def cfsd(
    params: Params,
    content: jax.Array,
    result: jax.Array,
    extractor: str = "vgg19",
    layer: str = CFSD_LAYER,
    rows: int = 1024,
) -> jax.Array:
    """Content-feature structural distance (Chung, Hyun & Heo, "Style Injection in
    Diffusion", CVPR 2024, their evaluation code): how far the result's self-similarity
    of features departs from the content's.

    With ``F`` the ``(hw, c)`` features at ``layer`` divided by ``c``, ``S = F F^T``; each
    row of ``softmax(S)`` is a distribution over the positions. CFSD is
    ``sum_i KL(softmax(S_content)_i || softmax(S_result)_i)``, summed over the rows (their
    ``kl_div(..., reduction="batchmean")`` for one image). The ``hw x hw`` matrices are
    built ``rows`` rows at a time (a 512 px image has 16384 positions at relu3_1: 1 GiB
    whole). The features are this extractor's (Keras VGG19 by default, its own
    preprocessing), so values are comparable with each other, not with figures printed
    from torchvision's VGG19.

    Raises:
      TypeError, ValueError: a bad argument, named (:class:`ImageTooSmallError`: no position
        left at ``layer``, as for images under 4 px at relu3_1).
    """
    rows = as_count("rows", rows)
    images = dict(zip(("content", "result"), checked_pair(content, result), strict=True))
    fc, fr = (f[layer] for f in _features(params, images, (layer,), extractor))
    fc, fr = (f.reshape(-1, f.shape[-1]) / f.shape[-1] for f in (fc, fr))
    n, rows = fc.shape[0], min(rows, fc.shape[0])
    blocks = -(-n // rows)
    padded = [jnp.pad(f, ((0, blocks * rows - n), (0, 0))) for f in (fc, fr)]

    def block_kl(start: jax.Array) -> jax.Array:
        log_p, log_q = (
            jax.nn.log_softmax(jax.lax.dynamic_slice_in_dim(p, start, rows) @ f.T, axis=-1)
            for p, f in zip(padded, (fc, fr), strict=True)
        )
        return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)

    per_row = jax.lax.map(block_kl, jnp.arange(blocks) * rows).reshape(-1)
    return jnp.sum(per_row[:n])


def lpips(params: Params, a: jax.Array, b: jax.Array) -> jax.Array:
    """LPIPS (v0.1, AlexNet) of two ``(H, W, 3)`` images in [0, 1] of one size; 0 for equal
    images (:mod:`nst_jax.core.lpips`; params: ``nst_jax.files.score_weights.load("lpips")``)."""
    a, b = checked_pair(a, b, smallest=lpips_net.MIN_SIDE)
    _check_network_params(params, lpips_net.param_shapes(), "lpips")
    return lpips_net.lpips_distance(params, a, b)


def inception_features(params: Params, image: jax.Array) -> jax.Array:
    """ArtFID's ``(2048,)`` Inception features of one image in [0, 1], at its own size
    (:mod:`nst_jax.core.inception`; params: ``score_weights.load("artfid")``)."""
    image = check_image(_numeric(image, "image"), "image")
    if min(image.shape[:2]) < inception.MIN_SIDE:
        raise ValueError(
            f"image: sides of at least {inception.MIN_SIDE} px needed, got {image.shape[:2]}"
        )
    _check_network_params(params, inception.param_shapes(), "artfid")
    return inception.inception_features(params, image)


def _check_network_params(params, shapes, name: str) -> None:
    """``params`` has the network's tree and shapes, or one ``ValueError`` saying so."""
    found = jax.tree.map(np.shape, params) if isinstance(params, dict) else None
    wanted = jax.tree.map(tuple, shapes, is_leaf=lambda x: isinstance(x, tuple))
    if found != wanted:
        raise ValueError(
            f"params are not {name}'s (load them with nst_jax.files.score_weights.load({name!r}))"
        )


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance of two sets of features ``(n, d)`` (Heusel et al., NeurIPS 2017),
    in float64: ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))``, with the
    unbiased covariances (``np.cov``), as pytorch-fid and ArtFID define it.

    They take the trace of ``scipy.linalg.sqrtm(S_a S_b)``, a ``d x d`` Schur decomposition
    (a minute for ``d = 2048`` on 2 cores) that rounds badly for the rank-deficient
    covariances of small sets. Here the trace is the sum of the square roots of the
    eigenvalues of ``S_a S_b``, which equal those of the smaller ``M M^T / ((n_a - 1)(n_b - 1))``
    with ``M = X_a X_b^T`` of the centred features (``eig(XY) = eig(YX)``): the singular
    values of ``M``. With more samples than dimensions, those of ``S_a^(1/2) S_b S_a^(1/2)``
    are used instead. Both are exact where ``sqrtm`` rounds (a set's FID to itself is 0 up
    to 1e-9 of its trace).

    Raises:
      TypeError: features that are not numbers.
      ValueError: fewer than two rows, or sets of other widths.
    """
    _numeric(features_a, "features_a"), _numeric(features_b, "features_b")
    if np.iscomplexobj(features_a) or np.iscomplexobj(features_b):
        raise ValueError("fid: the features are complex numbers")
    a, b = (np.asarray(f, np.float64) for f in (features_a, features_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"fid needs two (n >= 2, d) feature sets, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("fid: the features hold NaN or infinity")
    xa, xb = a - a.mean(0), b - b.mean(0)
    count = (len(a) - 1) * (len(b) - 1)
    traces = (np.sum(xa**2) / (len(a) - 1), np.sum(xb**2) / (len(b) - 1))
    if max(len(a), len(b)) <= a.shape[1]:
        root_trace = np.sum(np.linalg.svd(xa @ xb.T, compute_uv=False)) / np.sqrt(count)
    else:
        values, vectors = np.linalg.eigh(xa.T @ xa / (len(a) - 1))
        root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        middle = np.linalg.eigvalsh(root_a @ (xb.T @ xb / (len(b) - 1)) @ root_a)
        root_trace = np.sum(np.sqrt(np.clip(middle, 0, None)))
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + traces[0] + traces[1] - 2 * root_trace)


def art_fid(fid_value: float, lpips_mean: float) -> float:
    """ArtFID (Wright & Ommer, GCPR 2022): ``(LPIPS + 1) * (FID + 1)``, with the mean LPIPS
    of results to their contents and the FID of results to the styles.

    Raises:
      TypeError: an argument that is not one real number. ValueError: one that is negative,
        NaN or infinite.
    """
    for name, value in (("fid_value", fid_value), ("lpips_mean", lpips_mean)):
        if np.ndim(_numeric(value, name)) != 0 or np.iscomplexobj(value):
            raise TypeError(f"{name} must be one real number, got {value!r}")
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return (float(lpips_mean) + 1.0) * (float(fid_value) + 1.0)


def _pix():
    try:
        import dm_pix
    except ImportError:
        raise InputError("SSIM and PSNR need dm-pix: pip install 'nst_jax[metrics]'") from None
    return dm_pix


SSIM_WINDOW = 11  # dm-pix's Gaussian filter: a smaller image has no valid window


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
    """Structural similarity of two ``(H, W, 3)`` images in [0, 1] of one size (dm-pix:
    Wang et al. 2004, Gaussian window of 11 px, sigma 1.5); 1 for equal images. Sides
    below the window are refused (dm-pix would return 1 for any two such images)."""
    a, b = checked_pair(a, b, smallest=SSIM_WINDOW)
    return _pix().ssim(a, b, max_val=1.0)


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB of two images in [0, 1] of one size (dm-pix); inf
    when equal."""
    a, b = checked_pair(a, b)
    return _pix().psnr(a, b)


def warping_error(
    frame: jax.Array, previous: jax.Array, backward_flow: jax.Array, weights: jax.Array
) -> jax.Array:
    """One pair's error: ``sum c ||frame - warp(previous)||^2 / sum c`` (squared over the
    channels, averaged over the counted pixels); 0 where no pixel counts.

    Args:
      frame: ``(H, W, 3)`` in [0, 1], stylised frame ``i``.
      previous: ``(H, W, 3)`` in [0, 1], stylised frame ``i - 1``.
      backward_flow: ``(H, W, 2)``, content frame ``i`` -> ``i - 1``.
      weights: ``(H, W)``, :func:`nst_jax.core.temporal.consistency_weights` of the pair.

    Raises:
      TypeError: an argument that is not numbers.
      ValueError: naming the argument: a shape other than ``frame``'s, non-finite values.
    """
    frame = check_image(_numeric(frame, "frame"), "frame")
    previous = check_image(_checked_array(previous, "previous", frame.shape, "frame"), "previous")
    flow = _checked_array(backward_flow, "backward_flow", (*frame.shape[:2], 2), "frame")
    weights = _checked_array(weights, "weights", frame.shape[:2], "frame")
    return _pair_error(frame, previous, flow, weights)


def _pair_error(frame, previous, backward_flow, weights) -> jax.Array:
    squared = jnp.sum((frame - temporal.warp(previous, backward_flow)) ** 2, axis=-1)
    counted = jnp.sum(weights)
    return jnp.where(counted > 0, jnp.sum(weights * squared) / jnp.maximum(counted, 1.0), 0.0)


def clip_warping_error(
    frames: Sequence[jax.Array], backward: Sequence[jax.Array], forward: Sequence[jax.Array]
) -> float:
    """The mean of :func:`warping_error` over the consecutive pairs of ``frames`` (two or
    more, one size); ``backward[k]`` and ``forward[k]`` are the content flows between frames
    ``k`` and ``k + 1`` (``k + 1 -> k`` and ``k -> k + 1``): one of each per pair.

    Raises:
      TypeError: an argument that is not a sequence, or an element that is not numbers.
      ValueError: naming the argument: too few frames, a count of flows other than the
        pairs', a shape other than ``frames[0]``'s, non-finite values.
    """
    lists = {"frames": frames, "backward": backward, "forward": forward}
    for name, value in lists.items():
        if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
            raise TypeError(f"{name}: expected a sequence of arrays, got {type(value).__name__}")
    if len(frames) < 2:
        raise ValueError(f"frames: a clip needs two frames or more, got {len(frames)}")
    for name in ("backward", "forward"):
        if len(lists[name]) != len(frames) - 1:
            pairs = f"one flow per pair of frames ({len(frames) - 1})"
            raise ValueError(f"{name}: {pairs} needed, got {len(lists[name])}")
    first = check_image(_numeric(frames[0], "frames[0]"), "frames[0]")
    shape = first.shape
    images = [first] + [
        check_image(_checked_array(f, f"frames[{k}]", shape, "frames[0]"), f"frames[{k}]")
        for k, f in enumerate(frames[1:], 1)
    ]
    errors = []
    for k in range(len(frames) - 1):
        back, fore = (
            _checked_array(lists[n][k], f"{n}[{k}]", (*shape[:2], 2), "frames[0]")
            for n in ("backward", "forward")
        )
        weights = temporal.consistency_weights(fore, back)
        errors.append(_pair_error(images[k + 1], images[k], back, weights))
    return float(jnp.mean(jnp.stack(errors)))
