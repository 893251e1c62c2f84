"""The registry of style terms: what of the style an image is made to share.

A style term has three pure parts, for one image (:mod:`nst_jax.core.losses` has the
built-in ones):

- ``target(features)``: the style image's statistic of one layer's ``(h, w, c)`` features,
  computed once before the loop (a Gram matrix, say);
- ``statistic(features)``: the same statistic of the image being optimised, computed inside
  the loss from the features of the one VGG pass every term shares;
- ``loss(statistics, targets, weight, layer_weights)``: the weighted term over the style
  layers, ``{layer: statistic}`` against ``{layer: target}``, as
  :func:`nst_jax.core.losses.style_loss` is. A ``random`` term's loss also takes ``key``,
  the PRNG key of the step (a new one every step, the same on every evaluation within it:
  :func:`nst_jax.core.targets.step_targets`), as the sliced Wasserstein loss's projections
  need.

``StyleConfig(style_loss=name)`` chooses one by name; :func:`register_style_term` adds one,
so a new style loss is one entry, not a new loss function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from nst_jax.core import losses, sorts


def _features(features: Any) -> Any:
    """The image's features themselves: the terms that compare whole distributions."""
    return features


class StyleTerm(NamedTuple):
    """One style term's three parts (module docstring).

    Attributes:
      target: ``(h, w, c)`` features of the style -> its statistic (any pytree).
      statistic: ``(h, w, c)`` features of the image -> the statistic the loss compares.
      loss: ``(statistics, targets, weight, layer_weights) -> scalar``, over the layers.
      min_side: the fewest positions a style layer's map needs on each side (a term that
        compares 3x3 patches needs 3).
      random: whether ``loss`` takes the step's PRNG ``key`` (keyword).
    """

    target: Callable[[Any], Any]
    statistic: Callable[[Any], Any]
    loss: Callable[..., Any]
    min_side: int = 1
    random: bool = False


_TERMS: dict[str, StyleTerm] = {
    "gram": StyleTerm(losses.gram_matrix, losses.gram_matrix, losses.style_loss),
    "mean_std": StyleTerm(losses.feature_moments, losses.feature_moments, losses.mean_std_loss),
    "w2": StyleTerm(losses.w2_target, losses.gaussian_stats, losses.w2_loss),
    "mrf": StyleTerm(losses.mrf_target, _features, losses.mrf_loss, 3),
    "sw": StyleTerm(sorts.flat_features, _features, sorts.sw_loss, random=True),
    "efdm": StyleTerm(sorts.sorted_features, _features, sorts.efdm_loss),
    "moments": StyleTerm(sorts.sigmoid_moments, sorts.sigmoid_moments, sorts.moments_loss),
}
BUILT_IN: tuple[str, ...] = tuple(_TERMS)


def register_style_term(name: str, term: StyleTerm) -> None:
    """Make ``term`` available as ``StyleConfig(style_loss=name)``.

    Registering the same term again under its name does nothing (a notebook cell run twice).

    Raises:
      ValueError: ``name`` is taken by another term (compiled programs are keyed by it), or
        ``term``'s parts are not callables.
    """
    if name in BUILT_IN:
        raise ValueError(f"style term {name!r} is built in; register yours under another name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a style term's name is an identifier, got {name!r}")
    try:
        term = StyleTerm(*term)
        term = term._replace(min_side=_integer(term.min_side), random=bool(term.random))
    except (TypeError, ValueError):
        raise ValueError(f"style term {name!r}: expected a StyleTerm, got {term!r}") from None
    if not all(callable(part) for part in term[:3]) or term.min_side < 1:
        raise ValueError(
            f"style term {name!r}: target, statistic and loss must be callables, "
            "min_side a positive integer"
        )
    if name in _TERMS and not same_parts(_TERMS[name], term):
        raise ValueError(f"style term {name!r} is registered already, as another term")
    _TERMS[name] = term


def same_parts(a: tuple, b: tuple) -> bool:
    """Whether two registrations are the same: each part the same object, or a function
    of the same code, defaults and closure (a notebook cell or a plug-in file run again
    makes new function objects of the same source)."""
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def _same(x: Any, y: Any) -> bool:
    if x is y or not (callable(x) and callable(y)):
        return x is y or (not callable(x) and x == y)
    code_x, code_y = getattr(x, "__code__", None), getattr(y, "__code__", None)
    if code_x is None or code_x != code_y or x.__qualname__ != y.__qualname__:
        return False
    cells = [tuple(c.cell_contents for c in f.__closure__ or ()) for f in (x, y)]
    try:
        return x.__defaults__ == y.__defaults__ and bool(cells[0] == cells[1])
    except Exception:  # noqa: BLE001 - contents that cannot be compared are not the same
        return False


def _integer(value: Any) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(value)
    return int(value)


def style_term(name: str) -> StyleTerm:
    """The term registered as ``name``.

    Raises:
      ValueError: no such term.
    """
    if name not in _TERMS:
        raise ValueError(f"unknown style_loss {name!r}; known: {', '.join(names())}")
    return _TERMS[name]


def names() -> tuple[str, ...]:
    """Every registered term's name, the built-in ones first."""
    return tuple(_TERMS)
