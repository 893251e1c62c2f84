"""Configuration of a stylisation run, with the tutorial's settings as defaults."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from nst_jax.core.conv import CONV_METHODS
from nst_jax.core.geometry import check_tile
from nst_jax.core.layers import check_layers
from nst_jax.core.style_terms import BUILT_IN, style_term

OPTIMIZERS = ("adam", "optax_adam", "lbfgs")
# Older names still accepted (provenance of earlier outputs replays with --from).
OPTIMIZER_ALIASES = {"keras_adam": "adam"}
INITS = ("content", "noise", "style")  # or a path to an image file
POOLINGS = ("max", "avg")
LOOPS = ("auto", "device", "host")
PRESERVE_COLOR = ("none", "luminance", "histogram")
# The built-in style terms; more may be registered (nst_jax.register_style_term).
STYLE_LOSSES = BUILT_IN
TUTORIAL_STYLE_LAYERS = tuple(f"block{b}_conv1" for b in range(1, 6))  # conv1 of each block
MRF_STYLE_LAYERS = ("block3_conv1", "block4_conv1")  # Li & Wand's (relu3_1, relu4_1)
SCALE_RATIO = 2**0.5  # between consecutive sizes of a coarse-to-fine run
# The largest decay below 1 in float32 (1 - 2**-24): a larger one rounds to 1 there.
AVERAGE_MAX = float(np.nextafter(np.float32(1), np.float32(0)))


def _field(default, help: str, kind: str | None = None, choices=None):
    """A config field whose metadata documents it; the CLI generates its option from it.

    ``kind``: how the CLI parses it: ``"layers"`` (comma-separated names), ``"floats"``
    (comma-separated numbers), ``"sweep"`` (a number, or comma-separated numbers: one result
    each), ``"positive"`` (a number > 0), ``"per_style"`` (no option of its own: set by the
    options that follow each ``--style``); else by its type.
    """
    metadata = {"help": help, "kind": kind, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """Settings of a run. Defaults are the TensorFlow tutorial's.

    Each field's documentation is its ``help`` metadata (``StyleConfig.help(name)``), which
    ``nst-jax stylize --help`` shows too. Fields by concern: the objective (layers, weights,
    pooling), the optimiser (``optimizer``, ``learning_rate``, ``beta1``, ``beta2``,
    ``epsilon``, ``lbfgs_memory``), the schedule (``steps``, ``scales``, ``min_size``,
    ``coarse_steps``), the inputs (``init``, ``seed``, ``preserve_color``, ``style_blend``,
    ``style_scale``) and how it runs (``steps_per_call``, ``loop``, ``remat``, ``conv``).

    Weights and the learning rate may each be a number or, for a batch of N images, a sequence
    of N numbers: one setting per image, swept in one compiled program.
    """

    content_layers: tuple[str, ...] = _field(
        ("block5_conv2",),
        "VGG19 layers whose features the result shares with the content",
        "layers",
    )
    style_layers: tuple[str, ...] = _field(
        TUTORIAL_STYLE_LAYERS,
        "VGG19 layers whose statistics (Gram matrices) the result shares with the style "
        "(with style_loss mrf, unless given: block3_conv1,block4_conv1)",
        "layers",
    )
    content_layer_weights: tuple[float, ...] | None = _field(
        None, "one multiplier per content layer (default: 1 each)", "floats"
    )
    style_layer_weights: tuple[float, ...] | None = _field(
        None, "one multiplier per style layer (default: 1 each)", "floats"
    )
    style_loss: str = _field(
        "gram",
        "what of the style is matched: gram (the tutorial's Gram matrices), mean_std (channel "
        "means and deviations, Huang & Belongie 2017), w2 (Wasserstein-2 between the "
        "features' Gaussians), mrf (nearest 3x3 patches, Li & Wand 2016); losses.py",
        choices=STYLE_LOSSES,
    )
    content_weight: float | Sequence[float] = _field(1e4, "weight of the content term", "sweep")
    style_weight: float | Sequence[float] = _field(1e-2, "weight of the style term", "sweep")
    tv_weight: float | Sequence[float] = _field(30.0, "weight of the total-variation term", "sweep")
    learning_rate: float | Sequence[float] = _field(0.02, "Adam's step size", "sweep")
    beta1: float = _field(0.99, "Adam's first-moment decay")
    beta2: float = _field(0.999, "Adam's second-moment decay")
    epsilon: float = _field(
        0.1, "Adam's epsilon (large, so where it is added matters: see the optimizer's help)"
    )
    optimizer: str = _field(
        "adam",
        "adam: Keras' Adam, epsilon added to sqrt(v) before bias correction (the tutorial's); "
        "optax_adam: optax.adam, epsilon after; lbfgs: optax's L-BFGS with a zoom line "
        "search on the image projected into [0, 1] (no learning rate)",
        choices=OPTIMIZERS,
    )
    lbfgs_memory: int = _field(10, "past steps L-BFGS keeps")
    steps: int = _field(1000, "optimisation steps at the last (full) scale")
    scales: int = _field(
        1, "coarse-to-fine: sizes growing by sqrt(2), the last full size (multiscale.py)"
    )
    min_size: int | None = _field(
        None, "coarse-to-fine from this longest side in px (instead of a number of scales)"
    )
    coarse_steps: int | None = _field(
        None, "steps at each scale before the last (default: the steps of the last)"
    )
    preserve_color: str = _field(
        "none",
        "keep the content's colours: luminance-only transfer, or the style's colours "
        "matched to the content's (color.py)",
        choices=PRESERVE_COLOR,
    )
    style_blend: tuple[float, ...] | None = _field(
        None,
        "with several styles, one weight each: one style target, their Grams' weighted mean",
        "floats",
    )
    style_scale: float | None = _field(
        None, "style resized so its longest side is this times the content's", "positive"
    )
    style_weights: tuple[float, ...] | None = _field(
        None,
        "one multiplier of style_weight per style: with masks, each region's weight; "
        "with one style per image, that image's (not with style_blend)",
        "per_style",
    )
    style_scales: tuple[float | None, ...] | None = _field(
        None, "one style_scale per style (None: style_scale's)", "per_style"
    )
    normalize_gradients: bool = _field(
        False,
        "each content and style layer's gradient divided by its L1 norm, then "
        "multiplied by the layer's weight (jcjohnson/neural-style's -normalize_gradients; "
        "losses.normalize_gradient)",
    )
    average: float | None = _field(
        None,
        "return an exponential moving average of the iterates with this decay in "
        "[0, 1), bias-corrected (as Katherine Crowson's style-transfer-pytorch; "
        "optim.with_average); 0 returns the last iterate",
    )
    tol: float | None = _field(
        None,
        "stop an image early once its loss changed by at most this fraction over tol_window "
        "steps (as artistic-videos' -tol_loss_relative); in a batch each image stops on its own",
    )
    tol_window: int = _field(50, "steps over which tol measures the loss's change")
    steps_per_call: int = _field(
        50, "steps per chunk: the progress interval; on accelerators one compiled call"
    )
    loop: str = _field(
        "auto",
        "where a chunk's steps loop: device (one compiled fori_loop), host (a Python loop "
        "over a jitted step), auto (host on CPU, where XLA runs convolutions in loops "
        "slower; device elsewhere)",
        choices=LOOPS,
    )
    init: str = _field(
        "content", "starting image: content, noise (from the seed), style, or an image file"
    )
    seed: int | tuple[int, ...] = _field(
        0, "PRNG seed of noise initialisation (in a batch, one seed per image may be given)"
    )
    pooling: str = _field("max", "VGG pooling: max (Keras) or avg (Gatys et al.)", choices=POOLINGS)
    remat: bool = _field(
        False,
        "recompute each VGG block's activations in the backward pass (less memory "
        "on accelerators, ~1/3 more time)",
    )
    tile: int | str | None = _field(
        None,
        "compute each step's loss and gradient in tiles of N px (plus halos), exactly: "
        "for print sizes that do not fit in memory; auto: tile only the scales that would "
        "not fit, in the largest tiles that do; off (tiling.py)",
        "tile",
    )
    conv: str = _field(
        "auto",
        "3x3 convolutions: direct, winograd (F(2x2,3x3): fewer multiplications, same "
        "result up to rounding, longer compile), or auto (Winograd on CPU for runs long "
        "enough to repay its compile)",
        choices=("auto", "direct", "winograd"),
    )

    @staticmethod
    def help(name: str) -> str:
        """The documentation of field ``name``."""
        return StyleConfig.__dataclass_fields__[name].metadata["help"]

    def __post_init__(self) -> None:
        # Lists are accepted for convenience but stored as tuples so configs stay hashable.
        for field in ("content_layers", "style_layers"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        for field in (
            "content_layer_weights",
            "style_layer_weights",
            "style_blend",
            "style_weights",
        ):
            if getattr(self, field) is not None:
                object.__setattr__(self, field, tuple(float(v) for v in getattr(self, field)))
        if self.tile == "off":
            object.__setattr__(self, "tile", None)
        if isinstance(self.seed, (list, tuple)):
            object.__setattr__(self, "seed", tuple(int(s) for s in self.seed))
        if self.style_scales is not None:
            scales = tuple(None if v is None else float(v) for v in self.style_scales)
            object.__setattr__(self, "style_scales", scales)
        if self.style_loss == "mrf" and self.style_layers == TUTORIAL_STYLE_LAYERS:
            object.__setattr__(self, "style_layers", MRF_STYLE_LAYERS)
        alias = OPTIMIZER_ALIASES.get(self.optimizer)
        if alias:
            object.__setattr__(self, "optimizer", alias)
        for field in ("content_weight", "style_weight", "tv_weight", "learning_rate"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)):
                object.__setattr__(self, field, tuple(float(v) for v in value))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with one line naming the first bad setting."""
        self._validate_layers()
        self._validate_choices()
        self._validate_style_inputs()
        self._validate_tile()
        self._validate_numbers()

    def _validate_layers(self) -> None:
        if not self.content_layers or not self.style_layers:
            raise ValueError("content_layers and style_layers must each name at least one layer")
        check_layers(self.content_layers + self.style_layers)
        for layers, field in (
            ("content_layers", "content_layer_weights"),
            ("style_layers", "style_layer_weights"),
        ):
            weights = getattr(self, field)
            if weights is not None and len(weights) != len(getattr(self, layers)):
                raise ValueError(
                    f"{field} has {len(weights)} values for {len(getattr(self, layers))} {layers}"
                )

    def _validate_style_inputs(self) -> None:
        for field in ("content_layer_weights", "style_layer_weights", "style_blend"):
            for v in getattr(self, field) or ():
                if not (v >= 0 and math.isfinite(v)):
                    raise ValueError(f"{field} must be finite numbers >= 0, got {v}")
        for v in self.style_weights or ():
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"style_weights must be finite numbers >= 0, got {v}")
        for v in self.style_scales or ():
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ValueError(f"style_scales must be finite numbers > 0, got {v}")
        if self.style_weights is not None and self.style_blend is not None:
            raise ValueError("style_blend already weights each style: give no style_weights")
        if self.style_blend is not None and self.style_loss != "gram":
            raise ValueError("style_blend blends Gram matrices: it needs style_loss gram")
        if self.style_blend is not None and not sum(self.style_blend) > 0:
            raise ValueError("style_blend needs at least one weight > 0")
        if self.style_scale is not None and not self.style_scale > 0:
            raise ValueError(f"style_scale must be > 0, got {self.style_scale}")

    def _validate_numbers(self) -> None:
        if self.average is not None and not 0 <= self.average < 1:
            raise ValueError(f"average is a decay in [0, 1), got {self.average}")
        if self.average is not None and float(np.float32(self.average)) == 1.0:
            # A float32 run's average would stay 0 / 0: 1 - decay is 0 there.
            raise ValueError(f"average={self.average} is 1 in float32: at most {AVERAGE_MAX}")
        for field in ("content_weight", "style_weight", "tv_weight", "learning_rate"):
            values = getattr(self, field)
            for v in values if isinstance(values, tuple) else (values,):
                if not (v >= 0 and math.isfinite(v)):  # also rejects NaN
                    raise ValueError(f"{field} must be a finite number >= 0, got {v}")
        _ = self.sweep_size  # sweeps must agree in length
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if not self.epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon}")
        for seed in self.seed if isinstance(self.seed, tuple) else (self.seed,):
            if not -(2**63) <= seed < 2**63:  # what jax.random.key takes
                raise ValueError(f"seed must be an integer in [-2**63, 2**63), got {seed}")
        if self.tol is not None and not (self.tol > 0 and math.isfinite(self.tol)):
            raise ValueError(f"tol must be a finite number > 0, got {self.tol}")
        for field in ("steps", "steps_per_call", "scales", "lbfgs_memory", "tol_window"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be a positive integer, got {getattr(self, field)}")
        for field in ("min_size", "coarse_steps"):
            if getattr(self, field) is not None and getattr(self, field) < 1:
                raise ValueError(f"{field} must be a positive integer, got {getattr(self, field)}")

    def _validate_choices(self) -> None:
        for field, choices in (
            ("optimizer", OPTIMIZERS),
            ("pooling", POOLINGS),
            ("loop", LOOPS),
            ("preserve_color", PRESERVE_COLOR),
            ("conv", CONV_METHODS),
        ):
            if getattr(self, field) not in choices:
                raise ValueError(f"{field} must be one of {', '.join(choices)}")
        style_term(self.style_loss)  # registered, by name
        if not self.init:
            raise ValueError(f"init must be one of {', '.join(INITS)} or an image path")

    def _validate_tile(self) -> None:
        if self.tile is None:
            return
        if self.tile != "auto" and (isinstance(self.tile, bool) or not isinstance(self.tile, int)):
            raise ValueError(f"tile must be a number of pixels, auto or off, got {self.tile!r}")
        if self.tile != "auto":
            check_tile(self.tile, self.content_layers + self.style_layers)
        reason = self.untileable()
        if reason is not None:
            raise ValueError(f"tiled runs {reason}")

    def untileable(self, masked: bool = False) -> str | None:
        """Why a run of these settings (with content ``masked``) cannot be tiled, or ``None``
        when it can: the end of a sentence that starts "tiled runs". Tiles compute the Gram
        loss's exact gradient (:mod:`nst_jax.run.tiling`); what needs the whole image at once
        cannot be tiled."""
        if self.style_loss != "gram":
            return f"match Gram matrices: style_loss {self.style_loss} needs the whole image"
        if self.normalize_gradients:
            return "cannot normalise gradients (each layer's L1 norm is the whole image's)"
        if self.optimizer == "lbfgs":
            return "use a gradient optimizer: lbfgs's line search needs the whole image's loss"
        if masked:
            return "take no masks: give tile=None"
        return None

    def unmaskable(self) -> str | None:
        """Why a run of these settings cannot take content masks (spatial control), or
        ``None`` when it can."""
        if self.style_loss != "gram":
            return (
                "a masked run takes guided Gram matrices: it needs style_loss gram, "
                f"not {self.style_loss}"
            )
        if self.style_blend is not None:
            return "a masked run pairs each style with a region: give no style_blend"
        if self.tile is not None:
            return f"tiled runs {self.untileable(masked=True)}"
        return None

    def check_style_count(self, count: int) -> None:
        """Raise ``ValueError`` unless ``count`` style images fit the per-style settings:
        ``style_blend`` has one weight per style image."""
        if self.style_blend is not None and len(self.style_blend) != count:
            raise ValueError(
                f"style_blend has {len(self.style_blend)} weights for {count} style images"
            )

    def replace(self, **changes) -> StyleConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def sweep_size(self) -> int | None:
        """Length of the swept settings, or ``None`` when every setting is a single number."""
        lengths = {
            len(v)
            for v in (self.content_weight, self.style_weight, self.tv_weight, self.learning_rate)
            if isinstance(v, tuple)
        }
        if len(lengths) > 1:
            raise ValueError(f"swept settings have different lengths {sorted(lengths)}")
        return lengths.pop() if lengths else None
