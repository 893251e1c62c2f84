"""The optimisation step of one image, pure (:func:`make_step_fn`) or jitted (:func:`make_step`).

The step is the tutorial's: loss and gradient with respect to the image only, an optimiser
update, then the image clipped to [0, 1]. The loss it returns is that of the image it was
given, before the update (as the tutorial and ``stylize``'s ``losses`` report it). The
optimiser's own wrappers (:mod:`nst_jax.core.optim`) take part here: the average is folded in
after the clip, and a converged image (``with_tolerance``) keeps its image and state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from nst_jax.core.fields import check_config, part_of, program_key
from nst_jax.core.objective import ObjectiveConfig, Params, Targets, loss_fn
from nst_jax.core.optim import (
    AverageState,
    OptimizerConfig,
    ToleranceState,
    update_average,
    watch_loss,
)
from nst_jax.core.targets import step_targets

StepFn = Callable[..., tuple]


def update_image(
    tx: optax.GradientTransformation, grad, opt_state, x, loss=None, extra: dict | None = None
):
    """One optimiser update of the image from its gradient, clipped to [0, 1], folded into
    the average of ``with_average`` and, with ``with_tolerance``, applied only while the
    image has not converged (``loss``: the loss before the update). ``extra`` goes to
    ``tx.update`` (L-BFGS's ``value``, ``grad`` and ``value_fn``).

    Returns:
      ``(x, opt_state)``.
    """
    updates, new_state = tx.update(grad, opt_state, x, **(extra or {}))
    new_x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
    new_state = _averaged(new_state, new_x)
    if not isinstance(opt_state, ToleranceState):
        return new_x, new_state
    watched = watch_loss(opt_state, loss)
    keep = lambda new, old: jnp.where(watched.active, new, old)  # noqa: E731
    inner = jax.tree.map(keep, new_state.inner, opt_state.inner)
    return keep(new_x, x), watched._replace(inner=inner)


def _averaged(opt_state, x):
    # Structural (the state's types), so resolved while tracing.
    if isinstance(opt_state, ToleranceState):
        return opt_state._replace(inner=_averaged(opt_state.inner, x))
    return update_average(opt_state, x) if isinstance(opt_state, AverageState) else opt_state


def loss_config(config: ObjectiveConfig) -> ObjectiveConfig:
    """What a step's loss is given as its config: the objective's part of ``config`` (an
    :class:`ObjectiveConfig` or a ``nst_jax.StyleConfig``), its values that do not shape the
    program at their defaults (:func:`nst_jax.core.fields.program_key`), so configs that
    compile to one program share it."""
    check_config(config, ObjectiveConfig)
    return program_key(part_of(config, ObjectiveConfig))


def _check_step_arguments(tx, loss: Callable, donate: bool = False) -> None:
    """The step's arguments, checked when it is made rather than at its first call."""
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(f"tx must be an optax GradientTransformation, got {type(tx).__name__}")
    if not callable(loss):
        raise TypeError(f"loss must be a function like nst_jax.loss_fn, got {type(loss).__name__}")
    if not isinstance(donate, bool):
        raise TypeError(f"donate must be True or False, got {donate!r}")


def optimizer_kind(config) -> str:
    """``config.optimizer`` for a config that sets one; ``"adam"`` (a gradient step) for an
    :class:`ObjectiveConfig` alone."""
    return config.optimizer if isinstance(config, OptimizerConfig) else "adam"


def _gradient_step(config: ObjectiveConfig, tx: optax.GradientTransformation, loss: Callable):
    def step(params: Params, targets: Targets, x: jax.Array, opt_state: optax.OptState, t=0):
        targets = step_targets(targets, t)
        (value, terms), grad = jax.value_and_grad(loss, argnums=1, has_aux=True)(
            params, x, targets, config
        )
        x, opt_state = update_image(tx, grad, opt_state, x, value)
        return x, opt_state, value, terms

    return step


def _lbfgs_step(config: ObjectiveConfig, tx: optax.GradientTransformation, loss: Callable):
    """L-BFGS minimises ``x -> loss(clip(x, 0, 1))``.

    Evaluated at the clipped point, the value and gradient the line search keeps for its
    accepted point stay exact once the image is projected back into [0, 1], so a step costs
    exactly its line-search trials (the first also evaluates its start). The line search
    returns totals only, so the step's terms are NaN; ``stylize`` evaluates them per chunk.
    """

    def step(params: Params, targets: Targets, x: jax.Array, opt_state: optax.OptState, t=0):
        targets = step_targets(targets, t)

        def value_fn(y):
            return loss(params, jnp.clip(y, 0.0, 1.0), targets, config)[0]

        value, grad = optax.value_and_grad_from_state(value_fn)(x, state=opt_state)
        extra = {"value": value, "grad": grad, "value_fn": value_fn}
        x_new, opt_state = update_image(tx, grad, opt_state, x, value, extra)
        shapes = jax.eval_shape(lambda: loss(params, x, targets, config)[1])
        terms = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)
        return x_new, opt_state, value, terms

    return step


def make_step_fn(
    config: ObjectiveConfig, tx: optax.GradientTransformation, loss: Callable = loss_fn
) -> StepFn:
    """The per-image step as a pure function, not jitted (for ``jax.vmap`` or your own jit).

    ``loss`` has :func:`nst_jax.loss_fn`'s signature and results: another objective, or the
    same one computed another way (:func:`nst_jax.run.rows.row_loss`, an image split by rows).

    ``loss`` is given the objective's part of ``config`` (:func:`loss_config`).

    Returns:
      ``step(params, targets, x, opt_state, t=0) -> (x, opt_state, loss, terms)``, as
      :func:`make_step`'s. ``config.optimizer == "lbfgs"`` selects the L-BFGS form, which
      passes ``value``, ``grad`` and ``value_fn`` to ``tx.update``.
    """
    _check_step_arguments(tx, loss)
    if optimizer_kind(config) == "lbfgs":
        return _lbfgs_step(loss_config(config), tx, loss)
    return _gradient_step(loss_config(config), tx, loss)


def step_evaluations(config: ObjectiveConfig, before, after) -> jax.Array:
    """Loss evaluations (VGG forward and backward passes) one step made, from the
    optimiser's state before and after it: 1 for a gradient optimiser; for L-BFGS its
    line-search trials, plus one to start a fresh state."""
    if optimizer_kind(config) != "lbfgs":
        return jnp.ones((), jnp.int32)
    fresh = ~jnp.isfinite(optax.tree_utils.tree_get(before, "value"))
    trials = optax.tree_utils.tree_get(after, "num_linesearch_steps")
    return jnp.asarray(trials, jnp.int32) + fresh.astype(jnp.int32)


@functools.lru_cache(maxsize=32)
def _jitted_step(config: ObjectiveConfig, kind: str, tx, donate: bool, loss):
    step = _lbfgs_step(config, tx, loss) if kind == "lbfgs" else _gradient_step(config, tx, loss)
    return jax.jit(step, donate_argnums=(2, 3) if donate else ())


def make_step(
    config: ObjectiveConfig,
    tx: optax.GradientTransformation,
    *,
    donate: bool = False,
    loss: Callable = loss_fn,
) -> Callable:
    """The jitted optimisation step of one image.

    Args:
      config: a ``nst_jax.StyleConfig`` (or an :class:`ObjectiveConfig`: a gradient step):
        layers, pooling, remat and optimiser kind (term weights come from the targets).
      tx: the optimiser, from :func:`nst_jax.make_optimizer` or any optax transformation.
      donate: let XLA reuse the buffers of ``x`` and ``opt_state`` for the outputs (less
        memory; the arrays passed in are invalid afterwards).
      loss: the objective, :func:`nst_jax.loss_fn` or one with its signature.

    Returns:
      ``step(params, targets, x, opt_state, t=0) -> (x, opt_state, loss, terms)``: ``x``
      ``(H, W, 3)`` updated and clipped to [0, 1]; ``loss`` and ``terms`` (the loss's,
      ``content``, ``style``, ``tv`` for ``loss_fn``) those of the ``x`` passed in. ``t`` is
      the step's index: with a ``"key"`` in the targets, the loss draws from
      ``fold_in(key, t)`` (:func:`nst_jax.core.targets.step_targets`). The same arguments
      return the same compiled function.
    """
    _check_step_arguments(tx, loss, donate)
    return _jitted_step(loss_config(config), optimizer_kind(config), tx, donate, loss)
