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

from nst_jax.config import StyleConfig
from nst_jax.feedforward import adain, data, johnson, objective

METHODS = ("johnson", "adain")
# Each method's paper: (steps, batch size, learning rate, decay).
# Johnson et al. 2016: 40,000 iterations of batch 4 at 1e-3 (two epochs of COCO).
# Huang & Belongie 2017: 160,000 iterations of batch 8 at 1e-4, decayed by 5e-5.
PAPER_DEFAULTS = {"johnson": (40_000, 4, 1e-3, 0.0), "adain": (160_000, 8, 1e-4, 5e-5)}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What a training run depends on (besides its data, style and objective).

    Attributes:
      method: ``johnson`` or ``adain``.
      steps: training steps (``None``: the paper's).
      batch_size: images a step (``None``: the paper's).
      size: side of the square training crops.
      learning_rate: Adam's rate (``None``: the paper's).
      decay: the inverse-time decay of the rate (``None``: the paper's).
      seed: the params' initialisation and the data's order and crops.
      style_weight: AdaIN's style weight (lambda, 10 in the paper).
      width: the Johnson network's first channels (32 in the paper).
      residual_blocks: the Johnson network's residual blocks (5 in the paper).
    """

    method: str
    steps: int | None = None
    batch_size: int | None = None
    size: int = 256
    learning_rate: float | None = None
    decay: float | None = None
    seed: int = 0
    style_weight: float = 10.0
    width: int = 32
    residual_blocks: int = 5

    def resolved(self) -> TrainSettings:
        """The settings with the paper's values where ``None``, checked.

        Raises:
          ValueError: an unknown method or a value out of range (one line).
        """
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: {', '.join(METHODS)}")
        steps, batch, rate, decay = PAPER_DEFAULTS[self.method]
        done = dataclasses.replace(
            self,
            steps=steps if self.steps is None else self.steps,
            batch_size=batch if self.batch_size is None else self.batch_size,
            learning_rate=rate if self.learning_rate is None else self.learning_rate,
            decay=decay if self.decay is None else self.decay,
        )
        multiple = 8 if self.method == "adain" else 4  # the networks' down- and upsampling
        for name in ("steps", "batch_size", "size", "width", "residual_blocks"):
            if getattr(done, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if done.size % multiple:
            raise ValueError(f"size must be a multiple of {multiple} for {self.method}")
        if done.learning_rate <= 0 or done.decay < 0 or done.style_weight < 0:
            raise ValueError("learning_rate must be positive; decay and style_weight not negative")
        return done


def network(settings: TrainSettings) -> Any:
    """The Flax module a method trains."""
    if settings.method == "johnson":
        return johnson.TransformerNet(settings.width, settings.residual_blocks)
    return adain.Decoder()


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


def make_loss(settings: TrainSettings, config: StyleConfig | None = None) -> Callable:
    """``loss(params, vgg_params, contents, extra) -> (value, terms)``: Johnson's objective
    (``extra`` the style's targets) or AdaIN's (``extra`` a batch of styles)."""
    if settings.method == "johnson":
        return functools.partial(objective.johnson_loss, network(settings), config=config)
    return functools.partial(objective.adain_batch_loss, style_weight=settings.style_weight)


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
    settings: TrainSettings, contents: list, styles: list | None, start: int, workers: int = 2
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The ``(contents, styles or None)`` crops of each step from ``start`` on."""
    steps = range(start, settings.steps)
    ours = data.batches(contents, settings.batch_size, settings.size, settings.seed, steps)
    if styles is None:
        for batch in ours:
            yield batch, None
        return
    theirs = data.batches(
        styles, settings.batch_size, settings.size, settings.seed, steps, data.STYLE_STREAM
    )
    yield from zip(ours, theirs, strict=True)


def fit(
    settings: TrainSettings,
    state: dict,
    vgg_params: Any,
    batches: Iterator[tuple[np.ndarray, np.ndarray | None]],
    style_targets: Any = None,
    config: StyleConfig | None = None,
    on_step: Callable[[dict, jax.Array, dict], bool] | None = None,
    devices: Sequence | None = None,
) -> dict:
    """Train from ``state`` to ``settings.steps`` on ``batches`` (:func:`step_batches` from
    the state's step).

    Args:
      on_step: called after each step with the new state (on the devices), the loss before
        the step and its terms; it returns True to stop there.
      devices: the devices the batch is split over (default: the local ones).

    Returns:
      The last state, on the devices.
    """
    mesh = data_mesh(settings.batch_size, devices)
    train_step = objective.make_train_step(make_loss(settings, config), make_optimizer(settings))
    vgg_params, style_targets = replicate(mesh, (vgg_params, style_targets))
    params, opt_state = replicate(mesh, (state["params"], state["opt_state"]))
    step = int(state["step"])
    for contents, styles in batches:
        extra = style_targets if styles is None else split(mesh, styles)
        params, opt_state, value, terms = train_step(
            params, opt_state, vgg_params, split(mesh, contents), extra
        )
        step += 1
        state = {"params": params, "opt_state": opt_state, "step": jnp.asarray(step, jnp.int32)}
        if on_step is not None and on_step(state, value, terms):
            break
    return state
