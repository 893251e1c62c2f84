"""nst_jax: Gatys-style neural style transfer in JAX/Flax.

The research core, per image and pure (``stylize`` is built from the same pieces)::

    params = nst_jax.load_vgg19()                                   # Keras .h5 or converted
    targets = nst_jax.make_targets(params, content, style, config)  # content feats, style Grams
    loss, terms = nst_jax.loss_fn(params, x, targets, config)       # x: (H, W, 3) in [0, 1]
    tx = nst_jax.make_optimizer(config)                             # optax (Keras Adam)
    step = nst_jax.make_step(config, tx)        # jitted (params, targets, x, opt_state)
                                                #   -> (x, opt_state, loss, terms)
    result = nst_jax.stylize(content, style, params=params, config=config)

Importing nst_jax changes nothing in the process (environment, Pillow, garbage collector,
logging) and imports JAX only when a name that needs it is first used, so the ``nst-jax``
command starts (and answers Ctrl-C) at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it. The layers: ``core`` is the per-image research
# core, ``run`` what ``stylize`` adds, ``files`` bytes on disk, ``session`` the run's
# lifecycle, ``cli`` the program (README's "Layout").
_EXPORTS = {
    "PRESETS": "presets",
    "StyleConfig": "config",
    "ImageError": "errors",
    "InputError": "errors",
    "WeightsError": "errors",
    "LAYERS": "core.layers",
    "CONTENT_LAYERS": "core.objective",
    "STYLE_LAYERS": "core.objective",
    "loss_fn": "core.objective",
    "make_targets": "core.targets",
    "ObjectiveConfig": "core.objective",
    "OptimizerConfig": "core.optim",
    "keras_adam": "core.optim",
    "make_optimizer": "core.optim",
    "make_step": "core.step",
    "make_step_fn": "core.step",
    "scale_by_keras_adam": "core.optim",
    "averaged_image": "core.optim",
    "with_average": "core.optim",
    "with_tolerance": "core.optim",
    "Extractor": "core.extractors",
    "register_extractor": "core.extractors",
    "extractor": "core.extractors",
    "StyleTerm": "core.style_terms",
    "register_style_term": "core.style_terms",
    "style_term": "core.style_terms",
    "prepare_params": "core.conv",
    "vgg19_features": "core.vgg",
    "batch_mesh": "run.devices",
    "DivergedError": "events",
    "Event": "events",
    "RunState": "run.state",
    "StopRun": "events",
    "StyleResult": "run.state",
    "stylize": "run.stylize",
    "load_vgg19": "files.weights",
    "load_vgg16": "files.weights",
    "load_weights": "files.weights",
    "load_targets": "files.targets",
    "save_targets": "files.targets",
}
# Public submodules, by the name they are imported as (``from nst_jax import image``).
_SUBMODULES = {
    "image": "files.image",
    "losses": "core.losses",
    "metrics": "metrics",
    "temporal": "core.temporal",
    "session": "session",
}

# Spelled out for tools; a test checks that every name resolves.
__all__ = [
    "CONTENT_LAYERS",
    "DivergedError",
    "Event",
    "Extractor",
    "ImageError",
    "InputError",
    "LAYERS",
    "ObjectiveConfig",
    "OptimizerConfig",
    "PRESETS",
    "RunState",
    "STYLE_LAYERS",
    "StopRun",
    "StyleConfig",
    "StyleResult",
    "StyleTerm",
    "WeightsError",
    "averaged_image",
    "batch_mesh",
    "extractor",
    "image",
    "keras_adam",
    "load_targets",
    "load_vgg16",
    "load_vgg19",
    "load_weights",
    "loss_fn",
    "losses",
    "make_optimizer",
    "make_step",
    "make_step_fn",
    "make_targets",
    "metrics",
    "prepare_params",
    "register_extractor",
    "register_style_term",
    "save_targets",
    "scale_by_keras_adam",
    "session",
    "style_term",
    "stylize",
    "temporal",
    "vgg19_features",
    "with_average",
    "with_tolerance",
]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"nst_jax.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"nst_jax.{_SUBMODULES[name]}")
    else:
        raise AttributeError(f"module 'nst_jax' has no attribute {name!r}")
    globals()[name] = value  # found once; later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # the same names, for type checkers and editors
    from nst_jax import metrics, session
    from nst_jax.config import StyleConfig
    from nst_jax.core import losses, temporal
    from nst_jax.core.conv import prepare_params
    from nst_jax.core.extractors import Extractor, extractor, register_extractor
    from nst_jax.core.layers import LAYERS
    from nst_jax.core.objective import CONTENT_LAYERS, STYLE_LAYERS, ObjectiveConfig, loss_fn
    from nst_jax.core.optim import (
        OptimizerConfig,
        averaged_image,
        keras_adam,
        make_optimizer,
        scale_by_keras_adam,
        with_average,
        with_tolerance,
    )
    from nst_jax.core.step import make_step, make_step_fn
    from nst_jax.core.style_terms import StyleTerm, register_style_term, style_term
    from nst_jax.core.targets import make_targets
    from nst_jax.core.vgg import vgg19_features
    from nst_jax.errors import ImageError, InputError, WeightsError
    from nst_jax.events import DivergedError, Event, StopRun
    from nst_jax.files import image
    from nst_jax.files.targets import load_targets, save_targets
    from nst_jax.files.weights import load_vgg16, load_vgg19, load_weights
    from nst_jax.presets import PRESETS
    from nst_jax.run.devices import batch_mesh
    from nst_jax.run.state import RunState, StyleResult
    from nst_jax.run.stylize import stylize
