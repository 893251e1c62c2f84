"""The optimisation: targets, loss closure, optimizers, the jitted step, the chunked loop.

Everything here is written for one image and batched with ``jax.vmap``. Only the image is
differentiated; VGG params are an argument of every jitted function (never a closed-over
constant), so one compiled program serves any weights of the same shapes.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nst_jax import color, image, losses, multiscale, vgg
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError

Pytree = Mapping[str, jax.Array]
HPARAMS = ("content_weight", "style_weight", "tv_weight", "learning_rate")


class StyleResult(NamedTuple):
    """What :func:`stylize` returns.

    Attributes:
      image: float32 in [0, 1], same leading shape as the content: ``(H, W, 3)`` or
        ``(N, H, W, 3)``.
      losses: total loss *before* each step, ``(steps,)`` or ``(N, steps)`` (with several
        scales, the steps of every scale in order).
      evaluations: loss-and-gradient evaluations (VGG forward + backward passes) each image
        took, ``()`` or ``(N,)``: one per Adam step; for L-BFGS, one to start each scale plus
        each line-search trial.
    """

    image: jax.Array
    losses: np.ndarray
    evaluations: np.ndarray | None = None


class RunState(NamedTuple):
    """A run between chunks: enough to save, inspect or resume it.

    Attributes:
      step: steps done, counted over all scales of a coarse-to-fine run.
      images: ``(N, H, W, 3)`` current images (padded batch rows excluded), at the size of
        scale ``scale``.
      opt_states: the optimizer state pytree of the batch (its N rows as the leading axis).
      losses: ``(N, step)`` total loss before each step so far.
      terms: ``{"content", "style", "tv", "total": (N,)}`` loss terms before the last step
        (``losses[:, -1]`` is their total); computed by the step itself, so free.
      scale: index of the scale of a coarse-to-fine run (0 for a single-scale run).
      evaluations: ``(N,)`` loss-and-gradient evaluations so far.
    """

    step: int
    images: jax.Array
    opt_states: optax.OptState
    losses: np.ndarray
    terms: dict[str, np.ndarray] | None = None
    scale: int = 0
    evaluations: np.ndarray | None = None


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
    content_layer_weights: tuple[float, ...] | None
    style_layer_weights: tuple[float, ...] | None
    pooling: str
    optimizer: str
    beta1: float
    beta2: float
    epsilon: float
    lbfgs_memory: int
    steps_per_call: int
    remat: bool

    @classmethod
    def from_config(cls, config: StyleConfig) -> Plan:
        return cls(*(getattr(config, field) for field in cls._fields))

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.style_layers + self.content_layers))


def make_optimizer(plan: Plan, learning_rate: float | jax.Array) -> optax.GradientTransformation:
    """The optimizer named by ``plan.optimizer``, with a possibly traced learning rate.

    ``"lbfgs"`` is optax's L-BFGS with its zoom line search (strong Wolfe conditions); it has
    no learning rate. Its ``update`` needs ``value``, ``grad`` and ``value_fn`` (see
    :func:`lbfgs_step`).
    """
    if plan.optimizer == "adam":
        return keras_adam(learning_rate, plan.beta1, plan.beta2, plan.epsilon)
    if plan.optimizer == "optax_adam":
        return optax.adam(learning_rate, plan.beta1, plan.beta2, plan.epsilon)
    return optax.lbfgs(memory_size=plan.lbfgs_memory)


def _layer_weights(layers: Sequence[str], weights: Sequence[float] | None):
    return None if weights is None else dict(zip(layers, weights, strict=True))


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
    features = vgg.image_features(params, image, plan.layers, plan.pooling, plan.remat)
    content = {name: features[name] for name in plan.content_layers}
    grams = {name: losses.gram_matrix(features[name]) for name in plan.style_layers}
    content_weights = _layer_weights(plan.content_layers, plan.content_layer_weights)
    style_weights = _layer_weights(plan.style_layers, plan.style_layer_weights)
    return {
        "content": losses.content_loss(
            content, targets["content"], hparams["content_weight"], content_weights
        ),
        "style": losses.style_loss(grams, targets["style"], hparams["style_weight"], style_weights),
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


TERMS = ("content", "style", "tv", "total")


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
      ``"total"``, ``"content"``, ``"style"`` and ``"tv"`` of the image *before* the step, and
      ``"evaluations"``, the loss-and-gradient evaluations the step made. (L-BFGS steps leave
      the three terms NaN: see :func:`lbfgs_step`.)
    """
    if plan.optimizer == "lbfgs":
        return lbfgs_step(plan, params, targets, hparams, image, opt_state)
    grad_fn = jax.value_and_grad(total_loss, argnums=2, has_aux=True)
    (_, losses_), grad = grad_fn(plan, params, image, targets, hparams)
    optimizer = make_optimizer(plan, hparams["learning_rate"])
    updates, opt_state = optimizer.update(grad, opt_state, image)
    image = jnp.clip(optax.apply_updates(image, updates), 0.0, 1.0)
    return image, opt_state, {**losses_, "evaluations": jnp.ones((), jnp.int32)}


def projected_loss(
    plan: Plan, params: Pytree, targets, hparams
) -> Callable[[jax.Array], jax.Array]:
    """``x -> total_loss(clip(x, 0, 1))``: the function L-BFGS minimises.

    Evaluating at the clipped point means the value and gradient the line search stores for its
    accepted point stay exact after the image is projected back into [0, 1], so no step needs an
    extra evaluation; pixels the projection moved get gradient 0 (a projected-gradient step).
    """
    return lambda x: total_loss(plan, params, jnp.clip(x, 0.0, 1.0), targets, hparams)[0]


def lbfgs_init(plan: Plan, params: Pytree, targets, hparams, image: jax.Array) -> optax.OptState:
    """L-BFGS state for ``image``, holding the value and gradient there (one evaluation)."""
    value_fn = projected_loss(plan, params, targets, hparams)
    state = make_optimizer(plan, 0.0).init(image)
    value, grad = jax.value_and_grad(value_fn)(image)
    return optax.tree_utils.tree_set(state, value=value, grad=grad)


def lbfgs_step(
    plan: Plan,
    params: Pytree,
    targets: Mapping[str, Pytree],
    hparams: Pytree,
    image: jax.Array,
    opt_state: optax.OptState,
) -> tuple[jax.Array, optax.OptState, dict[str, jax.Array]]:
    """One L-BFGS step: direction from the stored gradient, zoom line search, projection.

    The value and gradient at ``image`` come from the state (the line search evaluated them),
    so the step costs exactly its line-search trials. The total loss before the step is
    exact; the separate terms are NaN here, because the line search returns only totals (the
    chunk loop evaluates them once per chunk instead).
    """
    value_fn = projected_loss(plan, params, targets, hparams)
    value = optax.tree_utils.tree_get(opt_state, "value")
    grad = optax.tree_utils.tree_get(opt_state, "grad")
    updates, opt_state = make_optimizer(plan, 0.0).update(
        grad, opt_state, image, value=value, grad=grad, value_fn=value_fn
    )
    image = jnp.clip(optax.apply_updates(image, updates), 0.0, 1.0)
    evaluations = optax.tree_utils.tree_get(opt_state, "num_linesearch_steps")
    nan = jnp.full((), jnp.nan, value.dtype)
    terms = {"content": nan, "style": nan, "tv": nan, "total": value}
    return image, opt_state, {**terms, "evaluations": jnp.asarray(evaluations, jnp.int32)}


def _empty_losses(dtype) -> dict[str, jax.Array]:
    return {**{t: jnp.zeros((), dtype) for t in TERMS}, "evaluations": jnp.zeros((), jnp.int32)}


def run_steps(
    plan: Plan,
    params: Pytree,
    targets: Mapping[str, Pytree],
    hparams: Pytree,
    image: jax.Array,
    opt_state: optax.OptState,
    n_steps: jax.Array,
):
    """Up to ``plan.steps_per_call`` steps of one image inside one compiled loop.

    ``n_steps`` is traced, so a shorter last chunk reuses the same compiled program.

    Returns:
      ``(image, opt_state, history, last, evaluations, before)``: ``history`` holds the total
      loss before each step, length ``plan.steps_per_call`` (entries from ``n_steps`` on are
      zero); ``last`` the loss terms before the last step; ``evaluations`` their count over the
      chunk; ``before`` the image before the last step, for L-BFGS's loss terms (``None``
      for Adam, whose step returns its terms, so the loop carries no extra image).
    """
    keep_before = plan.optimizer == "lbfgs"

    def body(i, carry):
        image, opt_state, history, _, evaluations, _ = carry
        new, opt_state, losses_ = step(plan, params, targets, hparams, image, opt_state)
        evaluations = evaluations + losses_["evaluations"]
        before = image if keep_before else None
        return new, opt_state, history.at[i].set(losses_["total"]), losses_, evaluations, before

    history = jnp.zeros(plan.steps_per_call, image.dtype)
    before = image if keep_before else None
    carry = (
        image,
        opt_state,
        history,
        _empty_losses(image.dtype),
        jnp.zeros((), jnp.int32),
        before,
    )
    return jax.lax.fori_loop(0, n_steps, body, carry)


@functools.partial(jax.jit, static_argnames="plan")
def _batch_content_targets(plan: Plan, params: Pytree, content: jax.Array):
    return jax.vmap(lambda im: vgg.image_features(params, im, plan.content_layers, plan.pooling))(
        content
    )


@functools.partial(jax.jit, static_argnames="plan")
def _single_style_grams(plan: Plan, params: Pytree, style: jax.Array):
    return style_grams(plan, params, style)


@functools.partial(jax.jit, static_argnames="plan")
def _batch_init(plan: Plan, params: Pytree, targets, hparams: Pytree, images: jax.Array):
    def init(t, hp, im):
        if plan.optimizer == "lbfgs":
            return lbfgs_init(plan, params, t, hp, im)
        return make_optimizer(plan, hp["learning_rate"]).init(im)

    return jax.vmap(init)(targets, hparams, images)


@functools.partial(jax.jit, static_argnames="plan")
def _batch_terms(plan: Plan, params: Pytree, targets, hparams: Pytree, images: jax.Array):
    """Loss terms of a batch (a forward pass only): L-BFGS's once-per-chunk log entry."""
    per_image = lambda t, hp, im: total_loss(plan, params, im, t, hp)[1]  # noqa: E731
    return jax.vmap(per_image)(targets, hparams, images)


def _over_batch(plan: Plan, per_image: Callable) -> Callable:
    """``per_image`` mapped over the leading (batch) axis of all its arguments.

    ``jax.vmap`` for Adam. L-BFGS runs image by image (``lax.map``) instead: its line search
    chooses between two branches that each evaluate the loss (``lax.cond``), and under
    ``vmap`` a cond with a batched predicate evaluates both, doubling the cost of every trial
    (measured: 10 evaluations for 5 trials).

    A batch of one runs ``per_image`` itself, with the batch axis dropped and put back: XLA:CPU
    runs the per-image program faster than its vmapped form, chiefly because a vmapped Gram
    ``f.T @ f`` becomes a batched product that first copies ``f`` transposed (512 px step:
    3379 vs 2975 ms, measured with the loss gradient alone).
    """
    batched = jax.vmap(per_image) if plan.optimizer != "lbfgs" else _mapped(per_image)

    def over_batch(*args):
        if jax.tree.leaves(args)[0].shape[0] == 1:
            out = per_image(*jax.tree.map(lambda a: a[0], args))
            return jax.tree.map(lambda a: a[None], out)
        return batched(*args)

    return over_batch


def _mapped(per_image: Callable) -> Callable:
    return lambda *args: jax.lax.map(lambda xs: per_image(*xs), args)


@functools.partial(jax.jit, static_argnames="plan", donate_argnames=("images", "opt_states"))
def _batch_run_steps(plan, params, targets, hparams, images, opt_states, n_steps):
    per_image = lambda t, hp, im, st: run_steps(plan, params, t, hp, im, st, n_steps)  # noqa: E731
    return _over_batch(plan, per_image)(targets, hparams, images, opt_states)


@functools.partial(jax.jit, static_argnames="plan", donate_argnames=("images", "opt_states"))
def _batch_step(plan, params, targets, hparams, images, opt_states):
    per_image = lambda t, hp, im, st: step(plan, params, t, hp, im, st)  # noqa: E731
    return _over_batch(plan, per_image)(targets, hparams, images, opt_states)


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
      images, states, ``(N, k)`` total losses on the host, ``{term: (N,)}`` loss terms before
      the chunk's last step, and ``(N,)`` evaluations made.
    """
    if loop == "device":
        images, opt_states, history, last, evaluations, before = _batch_run_steps(
            plan, params, targets, hparams, images, opt_states, k
        )
        totals = np.asarray(history[:, :k])
    else:
        history, evaluations, before = [], 0, None
        for i in range(k):
            if i == k - 1 and plan.optimizer == "lbfgs":
                # Terms of the image before the last step; computed now since the step
                # donates (reuses) the image's buffer.
                before = _batch_terms(plan, params, targets, hparams, images)
            images, opt_states, last = _batch_step(
                plan, params, targets, hparams, images, opt_states
            )
            history.append(last["total"])
            evaluations = evaluations + last["evaluations"]
        totals = np.stack([np.asarray(h) for h in history], axis=1)
    last = {name: last[name] for name in TERMS}
    if plan.optimizer == "lbfgs":
        terms = before if loop == "host" else _batch_terms(plan, params, targets, hparams, before)
        last = {**terms, "total": last["total"]}
    return images, opt_states, totals, jax.tree.map(np.asarray, last), np.asarray(evaluations)


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


def blend_grams(grams: Sequence[Pytree], weights: Sequence[float] | None) -> Pytree:
    """``sum_k w_k G_k / sum_k w_k`` per layer: one style target from several styles.

    Weights ``(1, 0)`` give the first style's Grams exactly (``x * 1 + y * 0 == x``).
    """
    if weights is None:
        (only,) = grams
        return only
    total = sum(weights)
    return jax.tree.map(
        lambda *g: sum(w / total * x for w, x in zip(weights, g, strict=True)), *grams
    )


def _style_sets(style, n: int, config: StyleConfig) -> list[list[jax.Array]]:
    """The style images of each of the ``n`` content images, as ``(h, w, 3)`` arrays.

    Without a blend each image has one style: one shared by all, or one per image. With
    ``config.style_blend`` every image shares the same K styles (K = number of weights).
    A style shared by several images is the same array object, so its Grams are computed once.
    """
    if isinstance(style, (list, tuple)):
        converted: dict[int, jax.Array] = {}  # by id: a shared style stays one object
        for s in style:
            if id(s) not in converted:
                converted[id(s)] = _as_batch("style", s)[0]
        order = [converted[id(s)] for s in style]
    else:
        order = list(_as_batch("style", style))
    if config.style_blend is not None:
        if len(order) != len(config.style_blend):
            raise ValueError(
                f"style_blend has {len(config.style_blend)} weights for {len(order)} style images"
            )
        return [order] * n
    if len(order) not in (1, n):
        raise ValueError(f"got {len(order)} style images for {n} content images; give 1 or {n}")
    return [[order[0]]] * n if len(order) == 1 else [[s] for s in order]


def _colour_inputs(config: StyleConfig, content: jax.Array, style_sets):
    """Content and styles as the optimisation sees them under ``config.preserve_color``."""
    if config.preserve_color == "none":
        return content, style_sets
    if config.preserve_color == "histogram":
        adapt = color.match_histogram
        run_content = content
    else:  # luminance: grey images, the style's luminance matched to the content's
        adapt = lambda s, c: color.grey(color.match_luminance(s, c))  # noqa: E731
        run_content = color.grey(color.luminance(content))
    sets = [[adapt(s, c) for s in styles] for styles, c in zip(style_sets, content, strict=True)]
    return run_content, sets


def _scaled_style(
    style: jax.Array, shape: tuple[int, int], style_scale: float | None, factor: float = 1.0
):
    """The style at the size one scale uses.

    With ``style_scale``, its longest side is ``style_scale`` times the content's at this
    scale. Without, it keeps its loaded size at the full scale and shrinks by the same
    ``factor`` as the content at coarser scales, so a texture keeps its size relative to the
    image from scale to scale (else what a coarse scale paints is too coarse for the next).
    """
    if style_scale is None and factor == 1.0:
        return style
    if style_scale is None:
        longest = max(1, round(factor * max(style.shape[:2])))
    else:
        longest = max(1, round(style_scale * max(shape)))
    h, w = image.scaled_shape(style.shape[0], style.shape[1], longest)
    return multiscale.resize_batch(style[None], max(h, 1), max(w, 1))[0]


def _style_targets(
    plan: Plan,
    params: Pytree,
    style_sets,
    config: StyleConfig,
    shape: tuple[int, int],
    factor: float = 1.0,
) -> dict[str, jax.Array]:
    """``{layer: (n, c, c)}`` style targets of the images, for content of size ``shape``
    (``factor`` times the full size)."""
    once: dict[tuple, Pytree] = {}
    targets = []
    for styles in style_sets:
        grams = []
        for s in styles:
            key = (id(s), shape, factor)
            if key not in once:
                scaled = _scaled_style(s, shape, config.style_scale, factor)
                once[key] = _grams_of(plan, params, scaled)
            grams.append(once[key])
        targets.append(blend_grams(grams, config.style_blend))
    return jax.tree.map(lambda *g: jnp.stack(g), *targets)


def batch_hparams(config: StyleConfig, n: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    """``{name: (n,)}`` hyperparameters: a number is broadcast, a sweep is checked."""
    hparams = {}
    for name in HPARAMS:
        value = np.asarray(getattr(config, name), dtype)
        if value.ndim == 1 and value.shape[0] != n:
            raise ValueError(f"{name} has {value.shape[0]} values for a batch of {n}")
        hparams[name] = jnp.broadcast_to(jnp.asarray(value), (n,))
    return hparams


def initial_images(config: StyleConfig, content: jax.Array, style_sets=None) -> jax.Array:
    """The starting images, at the content's size.

    ``"content"``: the content itself. ``"noise"``: uniform noise seeded by ``config.seed``,
    drawn once per image shape and shared by the batch, so an image starts the same whatever
    batch (or padding) it runs in. ``"style"``: each image's (most heavily blended) style,
    resized. Anything else is an image file's path, loaded and resized.
    """
    n, height, width, _ = content.shape
    if config.init == "content":
        # A copy, because the loop donates (and so invalidates) the buffer it is given.
        return jnp.array(content, copy=True)
    if config.init == "noise":
        noise = jax.random.uniform(jax.random.key(config.seed), content.shape[1:], content.dtype)
        return jnp.broadcast_to(noise, content.shape)
    if config.init == "style":
        pick = 0 if config.style_blend is None else int(np.argmax(config.style_blend))
        starts = [
            multiscale.resize_batch(styles[pick][None], height, width)[0] for styles in style_sets
        ]
        return jnp.clip(jnp.stack(starts), 0.0, 1.0).astype(content.dtype)
    start = image.load(config.init)
    start = jnp.asarray(image.resize(start, height, width), content.dtype)
    if config.preserve_color == "luminance":
        start = color.grey(color.luminance(start))
    return jnp.broadcast_to(start, content.shape)


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


class _Scale(NamedTuple):
    """What one scale of a run needs: its targets and hyperparameters, placed on devices."""

    targets: dict[str, Pytree]
    hparams: Pytree
    content: jax.Array


def _prepare_scale(plan, config, params, content, style_sets, shape, mesh) -> _Scale:
    """Targets of one scale: content features at ``shape``, style Grams, padded and placed."""
    n = content.shape[0]
    factor = max(shape) / max(content.shape[1:3])
    content = multiscale.resize_batch(content, *shape)
    what = "content" if shape == tuple(content.shape[1:3]) else f"content at scale {shape}"
    check_size(plan.layers, content.shape, what)
    per_image = {
        "content": content,
        "hparams": batch_hparams(config, n, content.dtype),
        "grams": _style_targets(plan, params, style_sets, config, shape, factor),
    }
    per_image = _place(_pad(per_image, (-n) % mesh.size if mesh else 0), mesh, P("batch"))
    content = per_image["content"]
    targets = {
        "content": _batch_content_targets(plan, params, content),
        "style": per_image["grams"],
    }
    return _Scale(targets, per_image["hparams"], content)


def pixel_steps(config: StyleConfig, n: int, height: int, width: int) -> int:
    """Images x pixels x steps of a run, over all its scales: what ``conv="auto"`` weighs
    against Winograd's longer compile (:func:`nst_jax.vgg.resolve_conv`)."""
    shapes = multiscale.scale_shapes(height, width, config)
    steps = multiscale.scale_steps(height, width, config)
    return n * sum(s * h * w for s, (h, w) in zip(steps, shapes, strict=True))


@contextlib.contextmanager
def _gc_frozen():
    """Exempt the objects alive now from Python's garbage collector while the block runs.

    Tracing a step creates tens of thousands of small objects, which set off the collector's
    full passes over everything JAX and Flax keep alive: a third of a warm start's tracing
    time (256 px Winograd step: 0.45 vs 0.31 s). If the program froze objects itself, its
    choice stands and nothing is done.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@_gc_frozen()
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
    With ``config.scales > 1`` (or ``min_size``) it runs coarse to fine; with
    ``config.preserve_color`` it keeps the content's colours (see :mod:`nst_jax.color`).

    Args:
      content: ``(H, W, 3)`` or ``(N, H, W, 3)`` float RGB in [0, 1], used as given (resizing
        is the loader's job).
      style: ``(h, w, 3)`` shared by all images, ``(N, h, w, 3)``, or a sequence of 1 or N
        ``(h_i, w_i, 3)`` arrays of any sizes (one style per content image). With
        ``config.style_blend``: the K styles to blend (a sequence or ``(K, h, w, 3)``),
        shared by all images.
      params: VGG19 params from :func:`nst_jax.load_vgg19`.
      config: settings; defaults to the tutorial's. Weights and learning rate given as N
        values sweep them over the batch; a single content image is repeated N times.
      callback: called after each chunk with ``(steps done, losses of the chunk as (N, k))``;
        for progress reporting.
      devices: devices to shard the batch over; default every local device.
      resume: a :class:`RunState` saved from an earlier run of the same inputs and config;
        the run continues from its scale and step, with its images, optimizer state and
        losses.
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
    n, height, width, _ = content.shape
    params = jax.tree.map(lambda p: jnp.asarray(p, content.dtype), params)
    run_content, style_sets = _colour_inputs(config, content, _style_sets(style, n, config))
    start = initial_images(config, run_content, style_sets)
    mesh = batch_mesh(devices)
    params = _place(params, mesh, P())
    # Once per run, for the steps: Winograd's kernel transform does not depend on the image.
    # Targets, computed once per scale, use the direct convolution: a second big program to
    # compile would cost more time and memory than Winograd saves in one forward pass.
    work = pixel_steps(config, n, height, width)
    step_params = vgg.prepare_params(params, config.conv, pixel_steps=work, layers=plan.layers)
    shapes = multiscale.scale_shapes(height, width, config)
    offsets = np.cumsum([0, *multiscale.scale_steps(height, width, config)])
    first = resume.scale if resume is not None else 0
    if first >= len(shapes):
        raise ValueError(f"resumed run is at scale {first}; this run has {len(shapes)} scales")
    history = [np.zeros((n, 0), np.float32)] if resume is None else [np.asarray(resume.losses)]
    evaluations = np.zeros(n, np.int64)
    if resume is not None and resume.evaluations is not None:
        evaluations = np.array(resume.evaluations, np.int64)  # a writable copy
    images = opt_states = None
    loop = resolve_loop(config.loop)
    start = _place(_pad(start, (-n) % mesh.size if mesh else 0), mesh, P("batch"))
    for index in range(first, len(shapes)):
        shape = shapes[index]
        scale = _prepare_scale(plan, config, params, run_content, style_sets, shape, mesh)
        init_args = (step_params, scale.targets, scale.hparams)
        done = int(offsets[index])
        if images is None:
            images = multiscale.resize_batch(start, *shape)
            images = jnp.array(images, copy=True)  # the loop donates it
        else:
            images = multiscale.upsample_images(images, start, *shape)
        if resume is not None and index == first:
            # Only the state's structure is needed here, so nothing is evaluated.
            structure = jax.eval_shape(functools.partial(_batch_init, plan), *init_args, images)
            images, opt_states = _restore(resume, images, structure, mesh)
            done = resume.step
        elif plan.optimizer == "lbfgs" or opt_states is None:
            opt_states = _batch_init(plan, *init_args, images)
            evaluations += plan.optimizer == "lbfgs"  # L-BFGS evaluates its start once
        else:
            opt_states = multiscale.carry_state(opt_states, *shape)
        while done < offsets[index + 1]:
            k = min(config.steps_per_call, int(offsets[index + 1]) - done)
            images, opt_states, chunk, last, used = _run_chunk(
                plan, step_params, scale.targets, scale.hparams, images, opt_states, k, loop
            )
            _check_finite(chunk, images, done)
            history.append(chunk[:n])
            evaluations += used[:n]
            done += k
            if callback is not None:
                callback(done, history[-1])
            if on_chunk is not None:
                terms = {name: value[:n] for name, value in last.items()}
                # Copies without the padding rows: the next chunk donates (reuses) the live
                # buffers, and a hook may keep the state (to resume from, say).
                images_now, states = jax.tree.map(
                    lambda x: jnp.array(x[:n], copy=True), (images, opt_states)
                )
                state = RunState(
                    done,
                    images_now,
                    states,
                    np.concatenate(history, axis=1),
                    terms,
                    index,
                    evaluations.copy(),
                )
                on_chunk(state)
    images = images[:n]
    if config.preserve_color == "luminance":
        images = jax.vmap(color.recombine)(images, content)
    all_losses = np.concatenate(history, axis=1)
    if single:
        return StyleResult(images[0], all_losses[0], evaluations[0])
    return StyleResult(images, all_losses, evaluations)
