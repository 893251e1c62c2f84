"""The optimisation: targets, loss closure, optimizers, the jitted step, the chunked loop.

Everything here is written for one image and batched with ``jax.vmap``. Only the image is
differentiated; VGG params are an argument of every jitted function (never a closed-over
constant), so one compiled program serves any weights of the same shapes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nst_jax import losses, vgg
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError

Pytree = Mapping[str, jax.Array]
HPARAMS = ("content_weight", "style_weight", "tv_weight", "learning_rate")


class StyleResult(NamedTuple):
    """What :func:`stylize` returns.

    Attributes:
      image: float32 in [0, 1], same leading shape as the content: ``(H, W, 3)`` or
        ``(N, H, W, 3)``.
      losses: total loss *before* each step, ``(steps,)`` or ``(N, steps)``.
    """

    image: jax.Array
    losses: np.ndarray


class RunState(NamedTuple):
    """A run between chunks: enough to save, inspect or resume it.

    Attributes:
      step: steps done.
      images: ``(N, H, W, 3)`` current images (padded batch rows excluded).
      opt_states: the optimizer state pytree of the batch (its N rows as the leading axis).
      losses: ``(N, step)`` total loss before each step so far.
      terms: ``{"content", "style", "tv", "total": (N,)}`` loss terms before the last step
        (``losses[:, -1]`` is their total); computed by the step itself, so free.
    """

    step: int
    images: jax.Array
    opt_states: optax.OptState
    losses: np.ndarray
    terms: dict[str, np.ndarray] | None = None


class DivergedError(InputError):
    """The loss or the image became non-finite (too large a learning rate, usually)."""

    def __init__(self, step: int):
        super().__init__(f"the run diverged: non-finite loss or image at step {step}")
        self.step = step


class KerasAdamState(NamedTuple):
    """State of :func:`keras_adam`: step count and the two moment estimates."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def keras_adam(
    learning_rate: float | jax.Array,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-7,
) -> optax.GradientTransformation:
    """Adam exactly as Keras (and so the TensorFlow tutorial) computes it.

    Keras folds the bias corrections into the step size and adds ``eps`` to the *uncorrected*
    ``sqrt(v)``: ``x -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``. optax's
    ``adam`` adds ``eps`` to the corrected ``sqrt(v_hat)`` instead, which is the same update
    with ``eps * sqrt(1 - b2^t)`` in place of ``eps``; with the tutorial's ``eps = 0.1`` early
    steps differ visibly. The moment updates use Keras' ``m += (g - m) * (1 - b1)`` form so
    float32 rounding matches too.

    Args:
      learning_rate: step size (may be traced, for sweeps).
      b1: first-moment decay.
      b2: second-moment decay.
      eps: added to ``sqrt(v)``.

    Returns:
      An optax ``GradientTransformation`` whose updates are to be *added* to the params.
    """

    def init(params: optax.Params) -> KerasAdamState:
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return KerasAdamState(jnp.zeros([], jnp.int32), zeros(), zeros())

    def update(updates, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jax.tree.leaves(state.mu)[0].dtype)
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), state.mu, updates)
        nu = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - b2), state.nu, updates)
        alpha = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        new_updates = jax.tree.map(lambda m, v: -(m * alpha) / (jnp.sqrt(v) + eps), mu, nu)
        return new_updates, KerasAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


class Plan(NamedTuple):
    """The static (compile-time) part of a config: changing any of it recompiles."""

    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    pooling: str
    optimizer: str
    beta1: float
    beta2: float
    epsilon: float
    steps_per_call: int

    @classmethod
    def from_config(cls, config: StyleConfig) -> Plan:
        return cls(*(getattr(config, field) for field in cls._fields))

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.style_layers + self.content_layers))


def make_optimizer(plan: Plan, learning_rate: float | jax.Array) -> optax.GradientTransformation:
    """The optimizer named by ``plan.optimizer``, with a possibly traced learning rate."""
    if plan.optimizer == "keras_adam":
        return keras_adam(learning_rate, plan.beta1, plan.beta2, plan.epsilon)
    return optax.adam(learning_rate, plan.beta1, plan.beta2, plan.epsilon)


def style_grams(plan: Plan, params: Pytree, style: jax.Array) -> dict[str, jax.Array]:
    """``{layer: (c, c)}`` Gram matrices of one ``(h, w, 3)`` style image."""
    features = vgg.image_features(params, style, plan.style_layers, plan.pooling)
    return {name: losses.gram_matrix(f) for name, f in features.items()}


def loss_terms(
    plan: Plan,
    params: Pytree,
    image: jax.Array,
    targets: Mapping[str, Pytree],
    hparams: Pytree,
) -> dict[str, jax.Array]:
    """The three weighted loss terms of one ``(H, W, 3)`` image."""
    features = vgg.image_features(params, image, plan.layers, plan.pooling)
    content = {name: features[name] for name in plan.content_layers}
    grams = {name: losses.gram_matrix(features[name]) for name in plan.style_layers}
    return {
        "content": losses.content_loss(content, targets["content"], hparams["content_weight"]),
        "style": losses.style_loss(grams, targets["style"], hparams["style_weight"]),
        "tv": losses.total_variation_loss(image, hparams["tv_weight"]),
    }


def total_loss(
    plan: Plan,
    params: Pytree,
    image: jax.Array,
    targets: Mapping[str, Pytree],
    hparams: Pytree,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Style + content + total variation, the quantity minimised, and the terms themselves
    (as ``value_and_grad``'s auxiliary output, so logs cost no extra pass)."""
    terms = loss_terms(plan, params, image, targets, hparams)
    total = terms["style"] + terms["content"] + terms["tv"]
    return total, {**terms, "total": total}


def step(
    plan: Plan,
    params: Pytree,
    targets: Mapping[str, Pytree],
    hparams: Pytree,
    image: jax.Array,
    opt_state: optax.OptState,
) -> tuple[jax.Array, optax.OptState, dict[str, jax.Array]]:
    """One optimisation step of one image.

    Returns:
      ``(new image clipped to [0, 1], new optimizer state, losses)``; ``losses`` holds
      ``"total"``, ``"content"``, ``"style"`` and ``"tv"`` of the image *before* the step.
    """
    grad_fn = jax.value_and_grad(total_loss, argnums=2, has_aux=True)
    (_, losses_), grad = grad_fn(plan, params, image, targets, hparams)
    optimizer = make_optimizer(plan, hparams["learning_rate"])
    updates, opt_state = optimizer.update(grad, opt_state, image)
    image = jnp.clip(optax.apply_updates(image, updates), 0.0, 1.0)
    return image, opt_state, losses_


def run_steps(
    plan: Plan,
    params: Pytree,
    targets: Mapping[str, Pytree],
    hparams: Pytree,
    image: jax.Array,
    opt_state: optax.OptState,
    n_steps: jax.Array,
) -> tuple[jax.Array, optax.OptState, jax.Array]:
    """Up to ``plan.steps_per_call`` steps of one image inside one compiled loop.

    ``n_steps`` is traced, so a shorter last chunk reuses the same compiled program.

    Returns:
      ``(image, opt_state, history, last)``: ``history`` holds the total loss before each step,
      length ``plan.steps_per_call`` (entries from ``n_steps`` on are zero); ``last`` the loss
      terms before the last step.
    """

    def body(i, carry):
        image, opt_state, history, _ = carry
        image, opt_state, losses_ = step(plan, params, targets, hparams, image, opt_state)
        return image, opt_state, history.at[i].set(losses_["total"]), losses_

    history = jnp.zeros(plan.steps_per_call, image.dtype)
    last = dict.fromkeys(("content", "style", "tv", "total"), jnp.zeros((), image.dtype))
    return jax.lax.fori_loop(0, n_steps, body, (image, opt_state, history, last))


@functools.partial(jax.jit, static_argnames="plan")
def _batch_content_targets(plan: Plan, params: Pytree, content: jax.Array):
    return jax.vmap(lambda im: vgg.image_features(params, im, plan.content_layers, plan.pooling))(
        content
    )


@functools.partial(jax.jit, static_argnames="plan")
def _single_style_grams(plan: Plan, params: Pytree, style: jax.Array):
    return style_grams(plan, params, style)


@functools.partial(jax.jit, static_argnames="plan")
def _batch_init(plan: Plan, images: jax.Array, hparams: Pytree):
    return jax.vmap(lambda im, hp: make_optimizer(plan, hp["learning_rate"]).init(im))(
        images, hparams
    )


@functools.partial(jax.jit, static_argnames="plan", donate_argnames=("images", "opt_states"))
def _batch_run_steps(plan, params, targets, hparams, images, opt_states, n_steps):
    per_image = lambda t, hp, im, st: run_steps(plan, params, t, hp, im, st, n_steps)  # noqa: E731
    return jax.vmap(per_image)(targets, hparams, images, opt_states)


@functools.partial(jax.jit, static_argnames="plan", donate_argnames=("images", "opt_states"))
def _batch_step(plan, params, targets, hparams, images, opt_states):
    per_image = lambda t, hp, im, st: step(plan, params, t, hp, im, st)  # noqa: E731
    return jax.vmap(per_image)(targets, hparams, images, opt_states)


def resolve_loop(loop: str) -> str:
    """``"auto"`` -> ``"host"`` on CPU, ``"device"`` elsewhere.

    XLA:CPU runs a step about 2.7x slower inside a compiled loop (``fori_loop``/``scan``) than
    as a top-level program (measured at 256 px, one core or two: see README), so on CPU the
    chunk is a Python loop over a jitted step. Dispatch is asynchronous, so Python only waits
    at the end of a chunk. On GPU and TPU the whole chunk is one compiled loop, so dispatch
    does not dominate small images.
    """
    if loop == "auto":
        return "host" if jax.default_backend() == "cpu" else "device"
    return loop


def _run_chunk(plan, params, targets, hparams, images, opt_states, k: int, loop: str):
    """``k`` steps of the batch.

    Returns:
      images, states, ``(N, k)`` total losses on the host, and ``{term: (N,)}`` loss terms
      before the chunk's last step.
    """
    if loop == "device":
        images, opt_states, history, last = _batch_run_steps(
            plan, params, targets, hparams, images, opt_states, k
        )
        return images, opt_states, np.asarray(history[:, :k]), jax.tree.map(np.asarray, last)
    history = []
    for _ in range(k):
        images, opt_states, last = _batch_step(plan, params, targets, hparams, images, opt_states)
        history.append(last["total"])
    totals = np.stack([np.asarray(h) for h in history], axis=1)
    return images, opt_states, totals, jax.tree.map(np.asarray, last)


def _as_batch(name: str, images: jax.Array | np.ndarray) -> jax.Array:
    """``(N, H, W, 3)`` float images; float32 unless float64 is given with x64 enabled."""
    images = jnp.asarray(images)
    if not jnp.issubdtype(images.dtype, jnp.floating):
        images = images.astype(jnp.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name}: expected (H, W, 3) or (N, H, W, 3), got {tuple(images.shape)}")
    return images


def _grams_of(plan: Plan, params: Pytree, style: jax.Array) -> dict[str, jax.Array]:
    check_size(plan.style_layers, style.shape, "style")
    return _single_style_grams(plan, params, style)


def _style_targets(
    plan: Plan, params: Pytree, style: jax.Array | np.ndarray | Sequence, n: int
) -> dict[str, jax.Array]:
    """``{layer: (n, c, c)}`` style Grams: one style for all, or one per image of any size."""
    if isinstance(style, (list, tuple)):
        # A style shared by several images (the same array object) is computed once.
        once: dict[int, dict[str, jax.Array]] = {}
        for s in style:
            if id(s) not in once:
                once[id(s)] = _grams_of(plan, params, _as_batch("style", s)[0])
        grams = [once[id(s)] for s in style]
    else:
        grams = [_grams_of(plan, params, s) for s in _as_batch("style", style)]
    if len(grams) not in (1, n):
        raise ValueError(f"got {len(grams)} style images for {n} content images; give 1 or {n}")
    stacked = jax.tree.map(lambda *g: jnp.stack(g), *grams)
    return jax.tree.map(lambda g: jnp.broadcast_to(g, (n, *g.shape[1:])), stacked)


def batch_hparams(config: StyleConfig, n: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    """``{name: (n,)}`` hyperparameters: a number is broadcast, a sweep is checked."""
    hparams = {}
    for name in HPARAMS:
        value = np.asarray(getattr(config, name), dtype)
        if value.ndim == 1 and value.shape[0] != n:
            raise ValueError(f"{name} has {value.shape[0]} values for a batch of {n}")
        hparams[name] = jnp.broadcast_to(jnp.asarray(value), (n,))
    return hparams


def initial_images(config: StyleConfig, content: jax.Array) -> jax.Array:
    """The starting images: the content itself, or uniform noise seeded by ``config.seed``.

    Noise is drawn once per image shape and shared by the batch, so an image starts the same
    whatever batch (or padding) it runs in.
    """
    if config.init == "noise":
        noise = jax.random.uniform(jax.random.key(config.seed), content.shape[1:], content.dtype)
        return jnp.broadcast_to(noise, content.shape)
    # A copy, because the loop donates (and so invalidates) the buffer it is given.
    return jnp.array(content, copy=True)


def batch_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D ``("batch",)`` mesh over ``devices`` (default: every local device), or ``None``
    when there is only one device."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.array(devices), ("batch",)) if len(devices) > 1 else None


def _pad(tree, extra: int):
    """Append ``extra`` copies of each leaf's last item along axis 0 (a ragged last batch)."""
    if not extra:
        return tree
    return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]), tree)


def _place(tree, mesh: Mesh | None, spec: P):
    return tree if mesh is None else jax.device_put(tree, NamedSharding(mesh, spec))


def check_size(layers: Sequence[str], shape: Sequence[int], what: str = "image") -> None:
    """Raise ``ValueError`` when an image is too small for the deepest of ``layers``."""
    need = 2 ** vgg.pools_before(layers)
    height, width = shape[-3], shape[-2]
    if min(height, width) < need:
        raise ValueError(
            f"{what} is {width}x{height} px; the layers used need both sides >= {need} px"
        )


def _check_finite(chunk: np.ndarray, images: jax.Array, done: int) -> None:
    """Raise :class:`DivergedError` naming the first step whose loss (or result) is not finite."""
    finite_steps = np.all(np.isfinite(chunk), axis=0)
    if not finite_steps.all():
        raise DivergedError(done + 1 + int(np.argmin(finite_steps)))
    if not bool(jnp.all(jnp.isfinite(images))):
        raise DivergedError(done + chunk.shape[1])  # the chunk's last update broke the image


def _restore(resume: RunState, images: jax.Array, opt_states, mesh: Mesh | None):
    """Put a saved run's images and optimizer state where a fresh run's would be."""
    if tuple(resume.images.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(
            f"resumed images have shape {tuple(resume.images.shape)}, this run {images.shape}"
        )
    extra = images.shape[0] - resume.images.shape[0]
    # Saved states may be a flat list of leaves (a checkpoint): give them this run's structure.
    states = jax.tree.unflatten(jax.tree.structure(opt_states), jax.tree.leaves(resume.opt_states))
    saved = jax.tree.map(jnp.asarray, (resume.images, states))
    restored = _pad(saved, extra) if extra else saved
    restored = jax.tree.map(lambda r, f: r.astype(f.dtype), restored, (images, opt_states))
    return _place(restored, mesh, P("batch"))


def stylize(
    content: jax.Array | np.ndarray,
    style: jax.Array | np.ndarray | Sequence[jax.Array | np.ndarray],
    *,
    params: Pytree,
    config: StyleConfig | None = None,
    callback: Callable[[int, np.ndarray], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
    resume: RunState | None = None,
    on_chunk: Callable[[RunState], None] | None = None,
) -> StyleResult:
    """Optimise an image (or a batch) to match ``content``'s features and ``style``'s Grams.

    A batch runs as one compiled program (per-image code under ``jax.vmap``); with several
    devices its batch axis is sharded over them (padded to a multiple of their count).

    Args:
      content: ``(H, W, 3)`` or ``(N, H, W, 3)`` float RGB in [0, 1], used as given (resizing
        is the loader's job).
      style: ``(h, w, 3)`` shared by all images, ``(N, h, w, 3)``, or a sequence of 1 or N
        ``(h_i, w_i, 3)`` arrays of any sizes (one style per content image).
      params: VGG19 params from :func:`nst_jax.load_vgg19`.
      config: settings; defaults to the tutorial's. Weights and learning rate given as N
        values sweep them over the batch; a single content image is repeated N times.
      callback: called after each chunk with ``(steps done, losses of the chunk as (N, k))``;
        for progress reporting.
      devices: devices to shard the batch over; default every local device.
      resume: a :class:`RunState` saved from an earlier run of the same inputs and config;
        the run continues from its step, with its images, optimizer state and losses.
      on_chunk: called after each chunk with the :class:`RunState` (for checkpoints, previews
        and interrupts; it may raise to stop the run).

    Raises:
      DivergedError: a loss or image became non-finite; nothing non-finite is returned.

    Returns:
      A :class:`StyleResult`; ``image`` is ``(H, W, 3)`` for one content image without a
      sweep, else ``(N, H, W, 3)``.
    """
    config = config or StyleConfig()
    plan = Plan.from_config(config)
    single = jnp.ndim(content) == 3 and config.sweep_size is None
    content = _as_batch("content", content)
    check_size(plan.layers, content.shape, "content")
    if config.sweep_size is not None and content.shape[0] == 1:
        content = jnp.broadcast_to(content, (config.sweep_size, *content.shape[1:]))
    n = content.shape[0]
    params = jax.tree.map(lambda p: jnp.asarray(p, content.dtype), params)
    per_image = {
        "content": content,
        "hparams": batch_hparams(config, n, content.dtype),
        "grams": _style_targets(plan, params, style, n),
    }
    mesh = batch_mesh(devices)
    per_image = _place(_pad(per_image, (-n) % mesh.size if mesh else 0), mesh, P("batch"))
    params = _place(params, mesh, P())
    content, hparams = per_image["content"], per_image["hparams"]
    targets = {
        "content": _batch_content_targets(plan, params, content),
        "style": per_image["grams"],
    }
    images = initial_images(config, content)
    opt_states = _batch_init(plan, images, hparams)
    history, done = [np.zeros((n, 0), np.float32)], 0
    if resume is not None:
        images, opt_states = _restore(resume, images, opt_states, mesh)
        history, done = [np.asarray(resume.losses)], resume.step
    loop = resolve_loop(config.loop)
    while done < config.steps:
        k = min(config.steps_per_call, config.steps - done)
        images, opt_states, chunk, last = _run_chunk(
            plan, params, targets, hparams, images, opt_states, k, loop
        )
        _check_finite(chunk, images, done)
        history.append(chunk[:n])
        done += k
        if callback is not None:
            callback(done, history[-1])
        if on_chunk is not None:
            terms = {name: value[:n] for name, value in last.items()}
            history_so_far = np.concatenate(history, axis=1)
            states = jax.tree.map(lambda x: x[:n], opt_states)  # without padding rows
            on_chunk(RunState(done, images[:n], states, history_so_far, terms))
    all_losses = np.concatenate(history, axis=1)
    if single:
        return StyleResult(images[0], all_losses[0])
    return StyleResult(images[:n], all_losses)
