"""Configuration of a stylisation run, with the tutorial's settings as defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from nst_jax import vgg

OPTIMIZERS = ("adam", "optax_adam", "lbfgs")
# Older names still accepted (provenance of earlier outputs replays with --from).
OPTIMIZER_ALIASES = {"keras_adam": "adam"}
INITS = ("content", "noise", "style")  # or a path to an image file
POOLINGS = ("max", "avg")
LOOPS = ("auto", "device", "host")
PRESERVE_COLOR = ("none", "luminance", "histogram")
SCALE_RATIO = 2**0.5  # between consecutive sizes of a coarse-to-fine run


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """Settings of :func:`nst_jax.stylize`. Defaults are the TensorFlow tutorial's.

    Weights and the learning rate may each be a number or, for a batch of N images, a sequence
    of N numbers: one setting per image, swept in one compiled program.

    Attributes:
      content_layers: VGG19 layers whose features the result should share with the content.
      style_layers: VGG19 layers whose Gram matrices the result should share with the style.
      content_weight: weight of the content term (tutorial: 1e4).
      style_weight: weight of the style term (tutorial: 1e-2).
      tv_weight: weight of the total-variation term (tutorial: 30).
      learning_rate: Adam step size (tutorial: 0.02).
      beta1: Adam first-moment decay (tutorial: 0.99).
      beta2: Adam second-moment decay (tutorial and Keras default: 0.999).
      epsilon: Adam epsilon (tutorial: 0.1; large, so its placement matters, see ``optimizer``).
      content_layer_weights: one multiplier per content layer (default: 1 each).
      style_layer_weights: one multiplier per style layer (default: 1 each).
      optimizer: ``"adam"`` (default; Keras' form: epsilon added to ``sqrt(v)`` before bias
        correction, so the tutorial's trajectory is reproduced), ``"optax_adam"`` (optax's
        ``adam``, epsilon after bias correction), or ``"lbfgs"`` (optax's L-BFGS with its zoom
        line search; the image is projected into [0, 1] after each step; no learning rate).
      lbfgs_memory: number of past steps L-BFGS keeps.
      steps: optimisation steps at the last (full) scale (tutorial: 10 epochs x 100).
      scales: sizes of a coarse-to-fine run: the image is optimised at sizes growing by
        sqrt(2), upsampled between scales (Adam's moments with it); the last is full size.
      min_size: instead of ``scales``, the longest side of the first scale (the number of
        scales follows from it).
      coarse_steps: steps at each scale before the last (default: ``steps``).
      preserve_color: ``"none"``, ``"luminance"`` (transfer on luminance, content's chroma
        kept) or ``"histogram"`` (style's colours matched to the content's first).
      style_blend: with several style images, one weight each: the style target is the
        weighted sum of their Grams (weights are normalised to sum to 1).
      style_scale: style image resized so its longest side is this times the content's
        (at every scale); default: used as loaded.
      steps_per_call: steps per chunk: the progress interval, and on accelerators the steps
        run inside one compiled call.
      loop: where a chunk's steps loop: ``"device"`` (one compiled ``fori_loop``), ``"host"``
        (a Python loop over a jitted step, asynchronously dispatched), or ``"auto"`` (host on
        CPU, where XLA runs convolutions inside loops ~2.7x slower; device elsewhere).
      init: starting image: ``"content"`` (tutorial), ``"noise"`` (uniform, from ``seed``),
        ``"style"`` (the style image resized to the content's size) or a path to an image.
      seed: PRNG seed, used by noise initialisation.
      pooling: ``"max"`` (Keras VGG19) or ``"avg"``.
      max_dim: longest side after loading (used by the loaders and the CLI; ``stylize`` takes
        arrays as given).
      remat: recompute each VGG block's activations in the backward pass instead of keeping
        them (``jax.checkpoint`` per block): less memory for large images, ~1/3 more time.
      conv: how the network's 3x3 convolutions are computed: ``"direct"``, ``"winograd"``
        (Winograd F(2x2, 3x3): fewer multiplications, same result up to float rounding; see
        :mod:`nst_jax.winograd`), or ``"auto"`` (Winograd on CPU for runs long enough to
        repay its longer compile, direct otherwise: :func:`nst_jax.vgg.resolve_conv`).
    """

    content_layers: tuple[str, ...] = ("block5_conv2",)
    style_layers: tuple[str, ...] = (
        "block1_conv1",
        "block2_conv1",
        "block3_conv1",
        "block4_conv1",
        "block5_conv1",
    )
    content_layer_weights: tuple[float, ...] | None = None
    style_layer_weights: tuple[float, ...] | None = None
    content_weight: float | Sequence[float] = 1e4
    style_weight: float | Sequence[float] = 1e-2
    tv_weight: float | Sequence[float] = 30.0
    learning_rate: float | Sequence[float] = 0.02
    beta1: float = 0.99
    beta2: float = 0.999
    epsilon: float = 0.1
    optimizer: str = "adam"
    lbfgs_memory: int = 10
    steps: int = 1000
    scales: int = 1
    min_size: int | None = None
    coarse_steps: int | None = None
    preserve_color: str = "none"
    style_blend: tuple[float, ...] | None = None
    style_scale: float | None = None
    steps_per_call: int = 50
    loop: str = "auto"
    init: str = "content"
    seed: int = 0
    pooling: str = "max"
    max_dim: int = 512
    remat: bool = False
    conv: str = "auto"

    def __post_init__(self) -> None:
        # Lists are accepted for convenience but stored as tuples so configs stay hashable.
        for field in ("content_layers", "style_layers"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        for field in ("content_layer_weights", "style_layer_weights", "style_blend"):
            if getattr(self, field) is not None:
                object.__setattr__(self, field, tuple(float(v) for v in getattr(self, field)))
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
        if not self.content_layers or not self.style_layers:
            raise ValueError("content_layers and style_layers must each name at least one layer")
        vgg.check_layers(self.content_layers + self.style_layers)
        for layers, field in (
            ("content_layers", "content_layer_weights"),
            ("style_layers", "style_layer_weights"),
        ):
            weights = getattr(self, field)
            if weights is not None and len(weights) != len(getattr(self, layers)):
                raise ValueError(
                    f"{field} has {len(weights)} values for {len(getattr(self, layers))} {layers}"
                )
        for field in ("content_layer_weights", "style_layer_weights", "style_blend"):
            for v in getattr(self, field) or ():
                if not v >= 0:
                    raise ValueError(f"{field} must be >= 0, got {v}")
        if self.style_blend is not None and not sum(self.style_blend) > 0:
            raise ValueError("style_blend needs at least one weight > 0")
        if self.style_scale is not None and not self.style_scale > 0:
            raise ValueError(f"style_scale must be > 0, got {self.style_scale}")
        for field in ("content_weight", "style_weight", "tv_weight", "learning_rate"):
            values = getattr(self, field)
            for v in values if isinstance(values, tuple) else (values,):
                if not v >= 0:  # also rejects NaN
                    raise ValueError(f"{field} must be >= 0, got {v}")
        _ = self.sweep_size  # sweeps must agree in length
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if not self.epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon}")
        for field, choices in (
            ("optimizer", OPTIMIZERS),
            ("pooling", POOLINGS),
            ("loop", LOOPS),
            ("preserve_color", PRESERVE_COLOR),
            ("conv", vgg.CONV_METHODS),
        ):
            if getattr(self, field) not in choices:
                raise ValueError(f"{field} must be one of {', '.join(choices)}")
        if not self.init:
            raise ValueError(f"init must be one of {', '.join(INITS)} or an image path")
        for field in ("steps", "steps_per_call", "max_dim", "scales", "lbfgs_memory"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be a positive integer, got {getattr(self, field)}")
        for field in ("min_size", "coarse_steps"):
            if getattr(self, field) is not None and getattr(self, field) < 1:
                raise ValueError(f"{field} must be a positive integer, got {getattr(self, field)}")

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


def gatys_weights(alpha: float = 1.0, beta: float = 1e3, reference_dim: int = 512):
    """Gatys et al. (CVPR 2016) content and style weights in this project's normalisation.

    Gatys: ``alpha * 1/2 sum (F - P)^2`` at one content layer, and
    ``beta * sum_l 1/5 * 1/(4 N_l^2 M_l^2) sum (G_l - A_l)^2`` with unnormalised Grams
    ``G = F^T F`` (N_l channels, M_l positions). Here Grams are divided by ``M_l`` and each
    term is a mean divided by the number of layers, so:

    - style: ``1/(4 N^2 M^2) sum (G - A)^2 = mean((G/M - A/M)^2) / 4``, giving
      ``style_weight = beta / 4`` (the 1/5 is our 1/n_layers);
    - content: ``1/2 sum (F - P)^2 = h w c / 2 * mean((F - P)^2)``, giving
      ``content_weight = alpha * h w c / 2``, which depends on the image size: ``block4_conv2``
      of a ``reference_dim`` square image is ``(dim/8)^2 x 512``.

    Returns:
      ``(content_weight, style_weight)``; with the defaults (alpha/beta = 1e-3, the paper's
      main setting) ``(1048576.0, 250.0)``.
    """
    h = w = reference_dim // 8
    return alpha * h * w * 512 / 2, beta / 4


_GATYS_CONTENT, _GATYS_STYLE = gatys_weights()

PRESETS: dict[str, StyleConfig] = {
    # The TensorFlow tutorial, exactly.
    "tutorial": StyleConfig(),
    # Gatys et al. 2016: relu4_2 content, relu1_1..relu5_1 style, L-BFGS from noise, average
    # pooling (their recommendation), no total variation; weights converted by gatys_weights().
    "gatys": StyleConfig(
        content_layers=("block4_conv2",),
        content_weight=_GATYS_CONTENT,
        style_weight=_GATYS_STYLE,
        tv_weight=0.0,
        optimizer="lbfgs",
        init="noise",
        pooling="avg",
        steps=500,
    ),
    # Chosen by measurement (README, "Presets"): the lowest tutorial loss per evaluation among
    # Adam and L-BFGS from the content or noise, single- or multi-scale, was Adam from the
    # content; among learning rates 0.01-0.1, 0.05 after 300 steps.
    "quality": StyleConfig(learning_rate=0.05),
}
