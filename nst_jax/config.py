"""Configuration of a stylisation run, with the tutorial's settings as defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from nst_jax import vgg

OPTIMIZERS = ("keras_adam", "adam")
INITS = ("content", "noise")
POOLINGS = ("max", "avg")
LOOPS = ("auto", "device", "host")


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
      optimizer: ``"keras_adam"`` (default; epsilon added to ``sqrt(v)`` before bias correction,
        as Keras does, so the tutorial's trajectory is reproduced) or ``"adam"`` (optax's
        ``adam``, epsilon added after bias correction).
      steps: number of optimisation steps (tutorial: 10 epochs x 100).
      steps_per_call: steps per chunk: the progress interval, and on accelerators the steps
        run inside one compiled call.
      loop: where a chunk's steps loop: ``"device"`` (one compiled ``fori_loop``), ``"host"``
        (a Python loop over a jitted step, asynchronously dispatched), or ``"auto"`` (host on
        CPU, where XLA runs convolutions inside loops ~2.7x slower; device elsewhere).
      init: starting image, ``"content"`` (tutorial) or ``"noise"`` (uniform, from ``seed``).
      seed: PRNG seed, used by noise initialisation.
      pooling: ``"max"`` (Keras VGG19) or ``"avg"``.
      max_dim: longest side after loading (used by the loaders and the CLI; ``stylize`` takes
        arrays as given).
    """

    content_layers: tuple[str, ...] = ("block5_conv2",)
    style_layers: tuple[str, ...] = (
        "block1_conv1",
        "block2_conv1",
        "block3_conv1",
        "block4_conv1",
        "block5_conv1",
    )
    content_weight: float | Sequence[float] = 1e4
    style_weight: float | Sequence[float] = 1e-2
    tv_weight: float | Sequence[float] = 30.0
    learning_rate: float | Sequence[float] = 0.02
    beta1: float = 0.99
    beta2: float = 0.999
    epsilon: float = 0.1
    optimizer: str = "keras_adam"
    steps: int = 1000
    steps_per_call: int = 50
    loop: str = "auto"
    init: str = "content"
    seed: int = 0
    pooling: str = "max"
    max_dim: int = 512

    def __post_init__(self) -> None:
        # Lists are accepted for convenience but stored as tuples so configs stay hashable.
        for field in ("content_layers", "style_layers"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
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
            ("init", INITS),
            ("pooling", POOLINGS),
            ("loop", LOOPS),
        ):
            if getattr(self, field) not in choices:
                raise ValueError(f"{field} must be one of {', '.join(choices)}")
        for field in ("steps", "steps_per_call", "max_dim"):
            if getattr(self, field) < 1:
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


PRESETS: dict[str, StyleConfig] = {
    "tutorial": StyleConfig(),
}
