"""Training a feed-forward network: settings, initial state, the jitted data-parallel step
and the loop, built from :mod:`.objective` and the core's public pieces.

- The optimiser is optax Adam with the papers' rates and an inverse-time decay,
  ``lr / (1 + decay * step)`` (Huang & Belongie's schedule; Johnson et al. use no decay).
- Data parallel: the batch is split over the local devices (``NamedSharding`` on a
  ``batch`` axis) and the params, optimiser state, VGG19 params and targets are replicated;
  XLA inserts the gradient's all-reduce. The largest device count that divides the batch is
  used.
- Exact resume: the state is the params, the optimiser state and the step; the batches and
  their crops are a function of the seed and the step (:mod:`.data`), so a run restored from
  a checkpoint continues as the uninterrupted run does, bit for bit on one backend.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nst_jax.config import check_honoured
from nst_jax.core.conv import NETWORK_WINOGRAD_MIN_PIXELS, prepare_params, resolve_conv
from nst_jax.core.fields import check_count, check_finite, setting
from nst_jax.core.objective import ObjectiveConfig
from nst_jax.events import DivergedError, Event, Hook, tell
from nst_jax.feedforward import adain, data, johnson, objective
from nst_jax.files import image

METHODS = ("johnson", "adain")
# Each method's paper: (steps, batch size, learning rate, decay).
# Johnson et al. 2016: 40,000 iterations of batch 4 at 1e-3 (two epochs of COCO).
# Huang & Belongie 2017: 160,000 iterations of batch 8 at 1e-4, decayed by 5e-5.
PAPER_DEFAULTS = {"johnson": (40_000, 4, 1e-3, 0.0), "adain": (160_000, 8, 1e-4, 5e-5)}
PAPER_FIELDS = ("steps", "batch_size")  # counts that may be None: the paper's
# The largest values accepted: far past any use, they bound what a model record (untrusted)
# can ask a loader to build.
LIMITS = {
    "steps": 10**9,
    "batch_size": 2**16,
    "size": 2**14,
    "width": 1024,
    "residual_blocks": 64,
}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What a training run depends on (besides its data, style and objective); each field's
    help is its metadata, from which ``nst-jax train``'s options are generated.

    Attributes:
      method: ``johnson`` or ``adain``.
      steps: training steps (``None``: the paper's).
      batch_size: images a step (``None``: the paper's).
      size: side of the square training crops.
      learning_rate: Adam's rate (``None``: the paper's).
      decay: the inverse-time decay of the rate (``None``: the paper's).
      seed: the params' initialisation and the data's order and crops.
      style_weight: AdaIN's style weight (lambda, 10 in the paper; ``--style-weight`` of an
        adain run, the objective's for johnson).
      width: the Johnson network's first channels (32 in the paper).
      residual_blocks: the Johnson network's residual blocks (5 in the paper).
    """

    method: str = setting("johnson", "the network: johnson (one style) or adain", choices=METHODS)
    steps: int | None = setting(None, "training steps (default: the paper's)")
    batch_size: int | None = setting(None, "images a step (default: the paper's)")
    size: int = setting(256, "side of the square training crops, in px")
    learning_rate: float | None = setting(None, "Adam's rate (default: the paper's)", "positive")
    decay: float | None = setting(
        None, "the rate is rate / (1 + decay * step) (default: the paper's)"
    )
    seed: int = setting(0, "the initialisation, the data's order and crops")
    style_weight: float = setting(10.0, "adain: the style loss's weight (lambda)", "derived")
    width: int = setting(32, "johnson: the network's first channels")
    residual_blocks: int = setting(5, "johnson: the network's residual blocks")

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        """Raise ``ValueError`` naming the first value out of range (``None`` fields are
        the paper's: :meth:`resolved`)."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name, most in LIMITS.items():
            value = getattr(self, name)
            check_count(name, value, optional=name in PAPER_FIELDS)
            if value is not None and value > most:
                raise ValueError(f"{name} must be at most {most}, got {value}")
        # NumPy draws the data's order and crops from it (default_rng takes no negatives).
        whole = isinstance(self.seed, int) and not isinstance(self.seed, bool)
        if not whole or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.learning_rate is not None:
            check_finite("learning_rate", self.learning_rate, strict=True)
        if self.decay is not None:
            check_finite("decay", self.decay)
        check_finite("style_weight", self.style_weight)
        multiple = 8 if self.method == "adain" else 4  # the networks' down- and upsampling
        if self.size % multiple:
            raise ValueError(f"size must be a multiple of {multiple} for {self.method}")

    def resolved(self) -> TrainSettings:
        """The settings with the paper's values where ``None`` (checked when made).

        Raises:
          ValueError: a value out of range (one line).
        """
        steps, batch, rate, decay = PAPER_DEFAULTS[self.method]
        return dataclasses.replace(
            self,
            steps=steps if self.steps is None else self.steps,
            batch_size=batch if self.batch_size is None else self.batch_size,
            learning_rate=rate if self.learning_rate is None else self.learning_rate,
            decay=decay if self.decay is None else self.decay,
        )


def network(settings: TrainSettings, conv: str = "direct") -> Any:
    """The Flax module a method trains, its convolutions computed by ``conv``
    (``"direct"`` or ``"winograd"``: :func:`nst_jax.core.conv.conv2d`)."""
    if settings.method == "johnson":
        return johnson.TransformerNet(settings.width, settings.residual_blocks, conv)
    return adain.Decoder(conv)


def example_input(settings: TrainSettings) -> jax.Array:
    """What the network takes, for one crop (an image, or AdaIN's encoder features)."""
    if settings.method == "johnson":
        return jnp.zeros((settings.size, settings.size, 3), jnp.float32)
    return jnp.zeros((settings.size // 8, settings.size // 8, 512), jnp.float32)


def make_optimizer(settings: TrainSettings) -> optax.GradientTransformation:
    """Adam at ``learning_rate / (1 + decay * step)``."""
    rate, decay = settings.learning_rate, settings.decay
    return optax.adam(lambda count: rate / (1.0 + decay * count))


def init_params(settings: TrainSettings) -> Any:
    """The network's initial params: Flax's defaults (kernels LeCun normal, truncated at two
    standard deviations; biases 0; normalisation scales 1), drawn with NumPy from the seed.
    Drawn so, they are the same on every backend and cost milliseconds, where compiling
    Flax's ``init`` (which also runs the network) takes seconds."""
    shapes = jax.eval_shape(network(settings).init, jax.random.key(0), example_input(settings))
    rng = np.random.default_rng([settings.seed, 2])

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            z = rng.standard_normal(leaf.shape)
            while np.any(np.abs(z) > 2):  # redraw beyond 2 sigma: a truncated normal
                far = np.abs(z) > 2
                z[far] = rng.standard_normal(int(far.sum()))
            # 0.8796 is the standard deviation of a unit normal truncated at 2 (Flax's too).
            return (z / np.sqrt(fan_in) / 0.87962566103423978).astype(leaf.dtype)
        return (np.ones if name == "scale" else np.zeros)(leaf.shape, leaf.dtype)

    return jax.tree.map(jnp.asarray, jax.tree_util.tree_map_with_path(draw, shapes))


def init_state(settings: TrainSettings) -> dict:
    """``{"params", "opt_state", "step"}`` before the first step."""
    params = init_params(settings)
    opt_state = make_optimizer(settings).init(params)
    return {"params": params, "opt_state": opt_state, "step": jnp.asarray(0, jnp.int32)}


def make_loss(
    settings: TrainSettings, config: ObjectiveConfig | None = None, conv: str = "direct"
) -> Callable:
    """``loss(params, vgg_params, contents, extra) -> (value, terms)``: Johnson's objective
    (``extra`` the style's targets) or AdaIN's (``extra`` a batch of styles), the network's
    convolutions computed by ``conv`` (``"direct"`` or ``"winograd"``)."""
    if settings.method == "johnson":
        return functools.partial(objective.johnson_loss, network(settings, conv), config=config)
    return functools.partial(
        objective.adain_batch_loss, style_weight=settings.style_weight, conv=conv
    )


def training_conv(settings: TrainSettings, conv: str = "auto") -> str:
    """The convolution method a training run uses: ``conv``, with ``"auto"`` resolved from
    the pixels it trains on (:func:`nst_jax.core.conv.resolve_conv`)."""
    s = settings.resolved()
    pixel_steps = s.steps * s.batch_size * s.size * s.size
    return resolve_conv(conv, pixel_steps, NETWORK_WINOGRAD_MIN_PIXELS)


def prepare_vgg(settings: TrainSettings, vgg_params: Any, config, conv: str) -> Any:
    """The VGG params of the training objective made ready for ``conv``
    (:func:`nst_jax.core.conv.prepare_params`), up to the deepest layer the loss reads."""
    if settings.method == "adain":
        return prepare_params(vgg_params, conv, layers=adain.STYLE_LAYERS)
    layers = tuple(config.content_layers) + tuple(config.style_layers)
    return prepare_params(vgg_params, conv, layers=layers, extractor=config.extractor)


def data_mesh(batch_size: int, devices: Sequence | None = None) -> Mesh:
    """A one-axis mesh over the most of ``devices`` (default: the local ones) that divide
    ``batch_size``."""
    devices = jax.local_devices() if devices is None else list(devices)
    count = max(n for n in range(1, len(devices) + 1) if batch_size % n == 0)
    return Mesh(np.array(devices[:count]), ("batch",))


def replicate(mesh: Mesh, tree: Any) -> Any:
    """``tree`` copied onto every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def split(mesh: Mesh, batch: np.ndarray) -> jax.Array:
    """``batch`` split along its first axis over ``mesh``'s devices."""
    return jax.device_put(batch, NamedSharding(mesh, PartitionSpec("batch")))


def step_batches(
    settings: TrainSettings,
    contents: list,
    styles: list | None,
    start: int,
    workers: int = 2,
    unreadable: set | None = None,
    max_pixels: int | None = image.MAX_PIXELS,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The ``(contents, styles or None)`` crops of each step from ``start`` on; a file that
    cannot be decoded (or is over ``max_pixels``) is replaced by the next readable one and
    added to ``unreadable``."""
    s = settings.resolved()
    steps = range(start, s.steps)
    loading = {"workers": workers, "unreadable": unreadable, "max_pixels": max_pixels}
    ours = data.batches(contents, s.batch_size, s.size, s.seed, steps, **loading)
    if styles is None:
        return ((batch, None) for batch in ours)
    theirs = data.batches(styles, s.batch_size, s.size, s.seed, steps, data.STYLE_STREAM, **loading)
    return zip(ours, theirs, strict=True)


def fit(
    settings: TrainSettings,
    state: dict,
    vgg_params: Any,
    batches: Iterator[tuple[np.ndarray, np.ndarray | None]],
    style_targets: Any = None,
    config: ObjectiveConfig | None = None,
    on_event: Hook | None = None,
    devices: Sequence | None = None,
    conv: str = "auto",
) -> dict:
    """Train from ``state`` to ``settings.steps`` on ``batches`` (:func:`step_batches` from
    the state's step).

    Args:
      settings: the training settings (``None`` fields take the paper's values).
      state: ``{"params", "opt_state", "step"}`` (:func:`init_state`, or a checkpoint's).
      vgg_params: VGG19 params.
      batches: each step's ``(contents, styles or None)``.
      style_targets: Johnson: the style's targets (:func:`nst_jax.make_targets`).
      config: Johnson: the objective (an :class:`~nst_jax.core.objective.ObjectiveConfig`,
        or a ``StyleConfig`` whose other settings are left at their defaults: training's
        schedule is ``settings``'); AdaIN trains on its paper's loss and takes none.
      on_event: the hook (:mod:`nst_jax.events`): an event after each step, its ``state``
        the new state (on the devices); :class:`~nst_jax.events.StopRun` stops there.
      devices: the devices the batch is split over (default: the local ones).
      conv: how the network's and VGG's convolutions are computed: ``"auto"``
        (:func:`training_conv`), ``"direct"`` or ``"winograd"``. A run continued from a
        checkpoint continues bit for bit with the same method.

    Raises:
      ValueError: settings out of range, or a config this training cannot honour.
      DivergedError: a step's loss was not finite; its ``state`` is the state before it.

    Returns:
      The last state, on the devices.
    """
    settings = check_fit(settings, config)
    conv = training_conv(settings, conv)
    mesh = data_mesh(settings.batch_size, devices)
    loss = make_loss(settings, config, conv)
    train_step = objective.make_train_step(loss, make_optimizer(settings))
    vgg_params = prepare_vgg(settings, vgg_params, config, conv)
    vgg_params, style_targets = replicate(mesh, (vgg_params, style_targets))
    params, opt_state = replicate(mesh, (state["params"], state["opt_state"]))
    step = int(state["step"])
    for contents, styles in batches:
        extra = style_targets if styles is None else split(mesh, styles)
        params, opt_state, value, terms = train_step(
            params, opt_state, vgg_params, split(mesh, contents), extra
        )
        loss = np.asarray(value)
        if not np.isfinite(loss):
            raise DivergedError(step + 1, state, "fit")
        step += 1
        state = {"params": params, "opt_state": opt_state, "step": jnp.asarray(step, jnp.int32)}
        values = {name: np.asarray(v) for name, v in terms.items()}
        if tell(on_event, Event("fit", "step", step, settings.steps, loss, values, state)):
            break
    return state


def check_fit(settings: TrainSettings, config: ObjectiveConfig | None) -> TrainSettings:
    """``settings`` resolved (the paper's values where ``None``), or ``ValueError`` for
    settings :func:`fit` cannot run: out of range, or an objective it cannot honour
    (:func:`nst_jax.config.check_honoured`)."""
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    settings = settings.resolved()
    if settings.method == "adain" and config is not None:
        raise ValueError("config: adain trains on its paper's loss; give config=None")
    if settings.method == "johnson":
        if not isinstance(config, ObjectiveConfig):
            raise TypeError("config: johnson trains on an ObjectiveConfig (or StyleConfig)")
        check_honoured("fit", config)
    return settings
