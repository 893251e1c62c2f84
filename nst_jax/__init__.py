"""nst_jax: Gatys-style neural style transfer in JAX/Flax.

The public API::

    params = nst_jax.load_vgg19()                       # official Keras .h5 or converted file
    feats = nst_jax.vgg19_features(params, images, layers)
    result = nst_jax.stylize(content, style, params=params, config=nst_jax.StyleConfig())
    result.image, result.losses
"""

# First: sets XLA's defaults before anything starts a JAX backend.
from nst_jax import _xla_defaults  # noqa: F401, I001
from nst_jax import image, losses
from nst_jax.config import PRESETS, StyleConfig
from nst_jax.errors import ImageError, InputError, WeightsError
from nst_jax.optimize import StyleResult, keras_adam, stylize
from nst_jax.vgg import LAYERS, vgg19_features
from nst_jax.weights import load_vgg19

__all__ = [
    "LAYERS",
    "PRESETS",
    "ImageError",
    "InputError",
    "StyleConfig",
    "StyleResult",
    "WeightsError",
    "image",
    "keras_adam",
    "load_vgg19",
    "losses",
    "stylize",
    "vgg19_features",
]

__version__ = "0.1.0"
