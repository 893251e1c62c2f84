"""Optimisers of the image as optax transformations: Keras' Adam, iterate averaging, and a
convergence test for early stopping (the step that applies them: :mod:`nst_jax.core.step`).

Keras' Adam (the tutorial's, so the default) adds epsilon to ``sqrt(v)`` before the bias
correction; optax's ``adam`` adds it after, to ``sqrt(v_hat)``. With the tutorial's
``epsilon = 0.1`` the two trajectories differ visibly, so both are offered: ``"adam"`` (Keras
form) and ``"optax_adam"``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax.core.fields import (
    check_choice,
    check_config,
    check_count,
    check_finite,
    check_flags,
    check_sweep,
    refuse_traced,
    setting,
)

OPTIMIZERS = ("adam", "optax_adam", "lbfgs")
# Older names still accepted (provenance of earlier outputs replays with --from).
OPTIMIZER_ALIASES = {"keras_adam": "adam"}
# The largest decay below 1 in float32 (1 - 2**-24): a larger one rounds to 1 there.
AVERAGE_MAX = float(np.nextafter(np.float32(1), np.float32(0)))


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """How the image is optimised. Defaults are the TensorFlow tutorial's (Keras' Adam).

    The learning rate lives in the optimiser's state (a batch may sweep it: N values for N
    images); every other field shapes the optimiser, and so its compiled step.
    ``nst_jax.StyleConfig`` holds every field of this config (and of the objective's).
    """

    learning_rate: float | Sequence[float] = setting(0.02, "Adam's step size", "sweep")
    beta1: float = setting(0.99, "Adam's first-moment decay", static=True)
    beta2: float = setting(0.999, "Adam's second-moment decay", static=True)
    epsilon: float = setting(
        0.1,
        "Adam's epsilon (large, so where it is added matters: see the optimizer's help)",
        static=True,
    )
    optimizer: str = setting(
        "adam",
        "adam: Keras' Adam, epsilon added to sqrt(v) before bias correction (the tutorial's); "
        "optax_adam: optax.adam, epsilon after; lbfgs: optax's L-BFGS with a zoom line "
        "search on the image projected into [0, 1] (no learning rate)",
        choices=OPTIMIZERS,
        static=True,
    )
    lbfgs_memory: int = setting(10, "past steps L-BFGS keeps", static=True)
    average: float | None = setting(
        None,
        "return an exponential moving average of the iterates with this decay in "
        "[0, 1), bias-corrected (as Katherine Crowson's style-transfer-pytorch; "
        "optim.with_average); 0 returns the last iterate",
    )
    tol: float | None = setting(
        None,
        "stop an image early once its loss changed by at most this fraction over tol_window "
        "steps (as artistic-videos' -tol_loss_relative); in a batch each image stops on its own",
    )
    tol_window: int = setting(50, "steps over which tol measures the loss's change")

    def __post_init__(self) -> None:
        self._normalise_optimizer()
        self.validate_optimizer()

    def _normalise_optimizer(self) -> None:
        refuse_traced(self)
        alias = OPTIMIZER_ALIASES.get(self.optimizer)
        if alias:
            object.__setattr__(self, "optimizer", alias)
        rate = self.learning_rate
        check_sweep("learning_rate", rate)
        if isinstance(rate, (list, tuple)):
            object.__setattr__(self, "learning_rate", tuple(_number(v) for v in rate))
        elif not isinstance(rate, bool) and np.ndim(rate) == 0:
            object.__setattr__(self, "learning_rate", _number(rate))

    def validate_optimizer(self) -> None:
        """Raise ``ValueError`` with one line naming the first bad setting of the optimiser."""
        check_flags(self)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_finite("learning_rate", self.learning_rate)
        for field in ("beta1", "beta2"):
            check_finite(field, getattr(self, field))
            if not getattr(self, field) < 1:
                raise ValueError(f"{field} must be in [0, 1), got {getattr(self, field)}")
        check_finite("epsilon", self.epsilon)
        check_count("lbfgs_memory", self.lbfgs_memory)
        check_count("tol_window", self.tol_window)
        if self.average is not None:
            check_finite("average", self.average)
            if not self.average < 1:
                raise ValueError(f"average is a decay in [0, 1), got {self.average}")
            if float(np.float32(self.average)) == 1.0:
                # A float32 run's average would stay 0 / 0: 1 - decay is 0 there.
                raise ValueError(f"average={self.average} is 1 in float32: at most {AVERAGE_MAX}")
        if self.tol is not None:
            check_finite("tol", self.tol, strict=True)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"learning_rate must be a number or numbers, got {value!r}") from None


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


class ToleranceState(NamedTuple):
    """State of :func:`with_tolerance`: the inner optimiser's, and the convergence watch.

    ``recent`` holds the last ``window`` losses as a ring indexed by step (``seen`` steps
    counted so far); ``active`` is False once the image has converged, and stays so.
    """

    inner: optax.OptState
    recent: jax.Array
    seen: jax.Array
    active: jax.Array
    tol: jax.Array


def with_tolerance(
    tx: optax.GradientTransformation, tol: float, window: int
) -> optax.GradientTransformation:
    """``tx`` with a convergence test kept in its state: early stopping per image.

    The rule of artistic-videos (Ruder et al. 2016, ``-tol_loss_relative`` over an
    ``-tol_loss_relative_interval``): at step ``t``, with ``L_t`` the loss of the image before
    update ``t``, the image has converged when ``t >= window`` and ``|L_{t-window} - L_t| <=
    tol * |L_{t-window}|``. A converged image is not updated again: the step
    (:func:`nst_jax.make_step_fn`) keeps its image and optimiser state as they are, so in a
    batch each image stops on its own while the others go on.

    Args:
      tx: the optimiser of the image; its updates are unchanged.
      tol: the relative change of the loss below which the image has converged, > 0.
      window: steps over which the change is measured, >= 1.
    """
    if not tol > 0 or window < 1:
        raise ValueError(f"tol must be > 0 and tol_window >= 1, got {tol} and {window}")

    def init(params):
        active = jnp.ones((), bool)
        recent = jnp.zeros(window, params.dtype)
        tolerance = jnp.asarray(tol, params.dtype)
        return ToleranceState(tx.init(params), recent, jnp.zeros((), jnp.int32), active, tolerance)

    def update(updates, state, params=None, **extra):
        updates, inner = tx.update(updates, state.inner, params, **extra)
        return updates, state._replace(inner=inner)

    return optax.GradientTransformationExtraArgs(init, update)


def watch_loss(state: ToleranceState, loss: jax.Array) -> ToleranceState:
    """``state`` after the loss of one more step: recorded, and ``active`` False if the
    image has converged (:func:`with_tolerance`). A converged state stays as it was."""
    window = state.recent.shape[0]
    slot = state.seen % window
    past = state.recent[slot]
    done = (state.seen >= window) & (jnp.abs(past - loss) <= state.tol * jnp.abs(past))
    active = state.active & ~done
    recorded = state._replace(recent=state.recent.at[slot].set(loss), seen=state.seen + 1)
    kept = jax.tree.map(lambda new, old: jnp.where(active, new, old), recorded, state)
    return kept._replace(active=active)


# The wrappers of this module: each keeps the wrapped optimiser's state as ``inner``.
WRAPPERS = (AverageState, ToleranceState)


def find_state(state, kind: type):
    """The state of type ``kind`` among ``state`` and the states it wraps, or ``None``."""
    while True:
        if isinstance(state, kind):
            return state
        if not isinstance(state, WRAPPERS):
            return None
        state = state.inner


def replace_state(state, kind: type, change):
    """``state`` with its state of type ``kind`` (:func:`find_state`) replaced by
    ``change(it)``; unchanged when there is none."""
    if isinstance(state, kind):
        return change(state)
    if isinstance(state, WRAPPERS):
        return state._replace(inner=replace_state(state.inner, kind, change))
    return state


def restart_scale(state, x: jax.Array):
    """``state`` at the start of a new scale of a coarse-to-fine run, whose first image is
    ``x``: the average starts afresh at ``x``, and so does the convergence watch (the loss
    of another size is not comparable)."""
    state = replace_state(state, AverageState, lambda s: restart_average(s, x))
    fresh = lambda s: s._replace(  # noqa: E731
        recent=jnp.zeros_like(s.recent), seen=jnp.zeros_like(s.seen), active=jnp.ones_like(s.active)
    )
    return replace_state(state, ToleranceState, fresh)


@functools.lru_cache(maxsize=32)
def _optimizer(
    kind: str,
    learning_rate: float,
    b1: float,
    b2: float,
    eps: float,
    memory: int,
    average: float | None = None,
    tolerance: tuple[float, int] | None = None,
):
    if tolerance is not None:
        inner = _optimizer(kind, learning_rate, b1, b2, eps, memory, average)
        return with_tolerance(inner, *tolerance)
    if average is not None:
        return with_average(_optimizer(kind, learning_rate, b1, b2, eps, memory), average)
    if kind == "lbfgs":
        return optax.lbfgs(memory_size=memory)
    factory = keras_adam if kind == "adam" else optax.adam
    # The learning rate lives in the state, so a batch can sweep it in one program; b1, b2
    # and eps stay Python numbers, computed in double precision as Keras does.
    inject = optax.inject_hyperparams(factory, static_args=("b1", "b2", "eps"))
    return inject(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """The optimiser ``config.optimizer`` names, as an optax transformation (``config``: an
    :class:`OptimizerConfig` or a ``nst_jax.StyleConfig``).

    ``"adam"`` (default): :func:`keras_adam`; ``"optax_adam"``: ``optax.adam``. Both keep the
    learning rate in their state (``optax.inject_hyperparams``: ``state.hyperparams``).
    ``"lbfgs"``: optax's L-BFGS with its zoom line search (no learning rate); its step
    evaluates the loss at the image projected into [0, 1]. With ``config.average``, wrapped
    in :func:`with_average`; with ``config.tol``, in :func:`with_tolerance` (outermost).

    The same settings return the same object, so :func:`make_step` compiles once for them.
    """
    check_config(config, OptimizerConfig)
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
        None if config.tol is None else (config.tol, config.tol_window),
    )
