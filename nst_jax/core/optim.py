"""Optimisers as optax transformations, and the jitted step that applies one to the image.

The step is the tutorial's: loss and gradient with respect to the image only, an optimiser
update, then the image clipped to [0, 1]. The loss it returns is that of the image it was
given, before the update (as the tutorial and ``stylize``'s ``losses`` report it).

Keras' Adam (the tutorial's, so the default) adds epsilon to ``sqrt(v)`` before the bias
correction; optax's ``adam`` adds it after, to ``sqrt(v_hat)``. With the tutorial's
``epsilon = 0.1`` the two trajectories differ visibly, so both are offered: ``"adam"`` (Keras
form) and ``"optax_adam"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from nst_jax.config import StyleConfig
from nst_jax.core.objective import Params, Targets, loss_fn, static_config


class ScaleByKerasAdamState(NamedTuple):
    """State of :func:`scale_by_keras_adam`: step count and the two moment estimates."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_keras_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7
) -> optax.GradientTransformation:
    """Adam's scaling as Keras computes it: ``sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.

    Keras folds the bias corrections into the step size and adds ``eps`` to the *uncorrected*
    ``sqrt(v)``; optax's ``scale_by_adam`` adds it to the corrected one, which is the same
    update with ``eps * sqrt(1 - b2^t)`` in place of ``eps``. The moments use Keras'
    ``m += (g - m) * (1 - b1)`` form so float32 rounding matches Keras too.
    """

    def init(params: optax.Params) -> ScaleByKerasAdamState:
        # Two separate arrays: a step that donates the state must not get one buffer twice.
        mu, nu = (jax.tree.map(jnp.zeros_like, params) for _ in range(2))
        return ScaleByKerasAdamState(jnp.zeros([], jnp.int32), mu, nu)

    def update(updates, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jax.tree.leaves(state.mu)[0].dtype)
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), state.mu, updates)
        nu = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - b2), state.nu, updates)
        correction = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        scaled = jax.tree.map(lambda m, v: m * correction / (jnp.sqrt(v) + eps), mu, nu)
        return scaled, ScaleByKerasAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def keras_adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-7,
) -> optax.GradientTransformation:
    """Adam exactly as Keras (and so the TensorFlow tutorial) computes it, built as optax
    builds its own: ``chain(scale_by_keras_adam(b1, b2, eps), scale_by_learning_rate(lr))``.

    Args:
      learning_rate: a number, a traced scalar or an optax schedule.
      b1: first-moment decay.
      b2: second-moment decay.
      eps: added to ``sqrt(v)``.
    """
    return optax.chain(
        scale_by_keras_adam(b1, b2, eps), optax.scale_by_learning_rate(learning_rate)
    )


class AverageState(NamedTuple):
    """State of :func:`with_average`: the inner optimiser's, and the running average.

    ``average_sum`` is the decay-weighted sum of the iterates, ``decay_power`` the decay to
    the number of iterates averaged; ``average_sum / (1 - decay_power)`` is the average.
    """

    inner: optax.OptState
    average_sum: jax.Array
    decay_power: jax.Array
    decay: jax.Array


def with_average(tx: optax.GradientTransformation, decay: float) -> optax.GradientTransformation:
    """``tx`` with an exponential moving average of the iterates kept in its state.

    Iterate averaging as Katherine Crowson's style-transfer-pytorch does it (its ``EMA``): the
    average starts at the first image, each step's (clipped) image is folded in with
    ``sum = decay * sum + (1 - decay) * x``, and the average is bias-corrected,
    ``sum / (1 - decay ** (steps + 1))``. With decay 0 it is the last iterate exactly. The
    step (:func:`make_step_fn`) updates the average after clipping the image, since ``tx``
    itself never sees the clipped image; :func:`averaged_image` reads it.

    Args:
      tx: the optimiser of the image; its updates are unchanged.
      decay: in [0, 1).
    """
    if not 0 <= decay < 1:
        raise ValueError(f"the average's decay must be in [0, 1), got {decay}")

    def init(params):
        d = jnp.asarray(decay, params.dtype)
        return AverageState(tx.init(params), (1 - d) * params, d, d)

    def update(updates, state, params=None, **extra):
        updates, inner = tx.update(updates, state.inner, params, **extra)
        return updates, state._replace(inner=inner)

    return optax.GradientTransformationExtraArgs(init, update)


def update_average(state: AverageState, x: jax.Array) -> AverageState:
    """Fold the new iterate ``x`` into the average of ``state``."""
    d = state.decay
    return state._replace(
        average_sum=d * state.average_sum + (1 - d) * x, decay_power=d * state.decay_power
    )


def averaged_image(state: AverageState) -> jax.Array:
    """The bias-corrected average of the iterates so far."""
    return state.average_sum / (1 - state.decay_power)


def restart_average(state: AverageState, x: jax.Array) -> AverageState:
    """``state`` with its average started afresh at ``x`` (a new scale's first image)."""
    return state._replace(average_sum=(1 - state.decay) * x, decay_power=state.decay)


@functools.lru_cache(maxsize=32)
def _optimizer(
    kind: str,
    learning_rate: float,
    b1: float,
    b2: float,
    eps: float,
    memory: int,
    average: float | None = None,
):
    if average is not None:
        return with_average(_optimizer(kind, learning_rate, b1, b2, eps, memory), average)
    if kind == "lbfgs":
        return optax.lbfgs(memory_size=memory)
    factory = keras_adam if kind == "adam" else optax.adam
    # The learning rate lives in the state, so a batch can sweep it in one program; b1, b2
    # and eps stay Python numbers, computed in double precision as Keras does.
    inject = optax.inject_hyperparams(factory, static_args=("b1", "b2", "eps"))
    return inject(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)


def make_optimizer(config: StyleConfig) -> optax.GradientTransformation:
    """The optimiser ``config.optimizer`` names, as an optax transformation.

    ``"adam"`` (default): :func:`keras_adam`; ``"optax_adam"``: ``optax.adam``. Both keep the
    learning rate in their state (``optax.inject_hyperparams``: ``state.hyperparams``).
    ``"lbfgs"``: optax's L-BFGS with its zoom line search (no learning rate); its step
    evaluates the loss at the image projected into [0, 1]. With ``config.average``, wrapped
    in :func:`with_average`.

    The same settings return the same object, so :func:`make_step` compiles once for them.
    """
    learning_rate = config.learning_rate
    if isinstance(learning_rate, tuple):  # a sweep: each image's rate is set in its state
        learning_rate = learning_rate[0]
    return _optimizer(
        config.optimizer,
        float(learning_rate),
        config.beta1,
        config.beta2,
        config.epsilon,
        config.lbfgs_memory,
        config.average,
    )


StepFn = Callable[..., tuple]


def update_image(tx: optax.GradientTransformation, grad, opt_state, x):
    """One optimiser update of the image from its gradient, clipped to [0, 1] (and folded
    into the average of :func:`with_average`). Returns ``(x, opt_state)``."""
    updates, opt_state = tx.update(grad, opt_state, x)
    x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
    return x, _averaged(opt_state, x)


def _gradient_step(
    config: StyleConfig, tx: optax.GradientTransformation, loss: Callable = loss_fn
) -> StepFn:
    def step(params: Params, targets: Targets, x: jax.Array, opt_state: optax.OptState):
        (value, terms), grad = jax.value_and_grad(loss, argnums=1, has_aux=True)(
            params, x, targets, config
        )
        x, opt_state = update_image(tx, grad, opt_state, x)
        return x, opt_state, value, terms, jnp.ones((), jnp.int32)

    return step


def _lbfgs_step(
    config: StyleConfig, tx: optax.GradientTransformation, loss: Callable = loss_fn
) -> StepFn:
    """L-BFGS minimises ``x -> loss(clip(x, 0, 1))``.

    Evaluated at the clipped point, the value and gradient the line search keeps for its
    accepted point stay exact once the image is projected back into [0, 1], so a step costs
    exactly its line-search trials (the first also evaluates its start). The line search
    returns totals only, so the step's terms are NaN; ``stylize`` evaluates them per chunk.
    """

    def step(params: Params, targets: Targets, x: jax.Array, opt_state: optax.OptState):
        def value_fn(y):
            return loss(params, jnp.clip(y, 0.0, 1.0), targets, config)[0]

        fresh = ~jnp.isfinite(optax.tree_utils.tree_get(opt_state, "value"))
        value, grad = optax.value_and_grad_from_state(value_fn)(x, state=opt_state)
        updates, opt_state = tx.update(
            grad, opt_state, x, value=value, grad=grad, value_fn=value_fn
        )
        x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
        opt_state = _averaged(opt_state, x)
        trials = optax.tree_utils.tree_get(opt_state, "num_linesearch_steps")
        nan = jnp.full((), jnp.nan, value.dtype)
        evaluations = jnp.asarray(trials, jnp.int32) + fresh.astype(jnp.int32)
        return x, opt_state, value, {"content": nan, "style": nan, "tv": nan}, evaluations

    return step


def _averaged(opt_state, x):
    # Structural (the state's type), so resolved while tracing.
    return update_average(opt_state, x) if isinstance(opt_state, AverageState) else opt_state


def make_step_fn(
    config: StyleConfig, tx: optax.GradientTransformation, loss: Callable = loss_fn
) -> StepFn:
    """The per-image step as a pure function, not jitted (for ``jax.vmap`` or your own jit).

    ``loss`` has :func:`nst_jax.loss_fn`'s signature and results: another objective, or the
    same one computed another way (:func:`nst_jax.rows.row_loss`, an image split by rows).

    Returns:
      ``step(params, targets, x, opt_state) -> (x, opt_state, loss, terms, evaluations)``:
      :func:`make_step`'s outputs plus the loss evaluations the step made (1 for Adam; the
      line-search trials for L-BFGS). ``config.optimizer == "lbfgs"`` selects the L-BFGS form,
      which passes ``value``, ``grad`` and ``value_fn`` to ``tx.update``.
    """
    config = static_config(config)
    if config.optimizer == "lbfgs":
        return _lbfgs_step(config, tx, loss)
    return _gradient_step(config, tx, loss)


@functools.lru_cache(maxsize=32)
def _jitted_step(config: StyleConfig, tx: optax.GradientTransformation, donate: bool):
    step = make_step_fn(config, tx)
    return jax.jit(
        lambda params, targets, x, opt_state: step(params, targets, x, opt_state)[:4],
        donate_argnums=(2, 3) if donate else (),
    )


def make_step(
    config: StyleConfig, tx: optax.GradientTransformation, *, donate: bool = False
) -> Callable:
    """The jitted optimisation step of one image.

    Args:
      config: layers, pooling, remat and optimiser kind (term weights come from the targets).
      tx: the optimiser, from :func:`make_optimizer` or any optax transformation.
      donate: let XLA reuse the buffers of ``x`` and ``opt_state`` for the outputs (less
        memory; the arrays passed in are invalid afterwards).

    Returns:
      ``step(params, targets, x, opt_state) -> (x, opt_state, loss, terms)``: ``x`` ``(H, W,
      3)`` updated and clipped to [0, 1]; ``loss`` and ``terms`` (``content``, ``style``,
      ``tv``) those of the ``x`` passed in. The same arguments return the same compiled
      function.
    """
    return _jitted_step(static_config(config), tx, donate)
