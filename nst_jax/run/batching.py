"""The research core's step over a batch: ``jax.vmap`` (or ``lax.map`` for L-BFGS), one
compiled chunk of steps, and optimiser states with a learning rate per image.

Everything here is built from :func:`nst_jax.make_step_fn`, the per-image step; the compiled
functions are cached per (static config, optimiser), so every run with the same settings and
shapes reuses one program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from nst_jax.config import StyleConfig
from nst_jax.core.fields import program_key
from nst_jax.core.objective import loss_fn
from nst_jax.core.optim import WRAPPERS
from nst_jax.core.step import make_step_fn, step_evaluations
from nst_jax.core.targets import step_targets


def resolve_loop(loop: str) -> str:
    """``"auto"`` -> ``"host"`` on CPU, ``"device"`` elsewhere.

    XLA:CPU runs a step slower inside a compiled loop (``fori_loop``/``scan``) than as a
    top-level program (scripts/README.md, "Design measurements"), so on CPU a chunk is a
    Python loop over a jitted step, dispatched asynchronously. On GPU and TPU the whole chunk
    is one compiled loop, so dispatch does not dominate small images.
    """
    if loop == "auto":
        return "host" if jax.default_backend() == "cpu" else "device"
    return loop


def over_batch(config: StyleConfig, per_image: Callable) -> Callable:
    """``per_image`` mapped over the leading (batch) axis of all its arguments.

    ``jax.vmap`` for Adam. L-BFGS runs image by image (``lax.map``): its line search chooses
    between branches that each evaluate the loss (``lax.cond``), and under ``vmap`` a cond with
    a batched predicate evaluates both, doubling every trial's cost. The ``w2`` style loss runs
    image by image too: with XLA:CPU's memory-minimising scheduler (the CLI's), a batch of its
    eigendecompositions under ``vmap`` compiles and runs far slower than image by image.

    A batch of one runs ``per_image`` itself, the batch axis dropped and put back: XLA:CPU runs
    the per-image program faster than its vmapped form, chiefly because a vmapped Gram
    ``f.T @ f`` becomes a batched product that first copies ``f`` transposed.
    """
    if config.optimizer == "lbfgs" or config.style_loss == "w2":
        batched = lambda *args: jax.lax.map(lambda xs: per_image(*xs), args)  # noqa: E731
    else:
        batched = jax.vmap(per_image)

    def mapped(*args):
        if jax.tree.leaves(args)[0].shape[0] == 1:
            out = per_image(*jax.tree.map(lambda a: a[0], args))
            return jax.tree.map(lambda a: a[None], out)
        return batched(*args)

    return mapped


def batch_step(
    config: StyleConfig, tx: optax.GradientTransformation, loss: Callable = loss_fn
) -> Callable:
    """Jitted ``(params, targets, images, states, t) -> (images, states, loss, terms,
    evaluations)`` of a batch at step ``t`` (every image's, from 0 over the run's scales),
    each output with a leading batch axis; images and states are donated. Configs that
    differ only in traced values share the compiled function. ``loss``: as
    :func:`nst_jax.make_step_fn`'s."""
    return _batch_step(program_key(config), tx, loss)


def counted_step(config: StyleConfig, tx: optax.GradientTransformation, loss: Callable):
    """:func:`nst_jax.make_step_fn`'s step with a fifth output: the loss evaluations it
    made (:func:`nst_jax.core.step.step_evaluations`)."""
    step = make_step_fn(config, tx, loss)

    def counted(params, targets, x, state, t=0):
        x, new_state, value, terms = step(params, targets, x, state, t)
        return x, new_state, value, terms, step_evaluations(config, state, new_state)

    return counted


@functools.lru_cache(maxsize=32)
def _batch_step(config: StyleConfig, tx: optax.GradientTransformation, loss: Callable) -> Callable:
    step = counted_step(config, tx, loss)

    def batched_step(params, targets, images, states, t):
        per_image = lambda tg, x, s: step(params, tg, x, s, t)  # noqa: E731
        return over_batch(config, per_image)(targets, images, states)

    return jax.jit(batched_step, donate_argnums=(2, 3))


def batch_chunk(
    config: StyleConfig, tx: optax.GradientTransformation, loss: Callable = loss_fn
) -> Callable:
    """Up to ``config.steps_per_call`` steps of a batch in one compiled ``fori_loop``.

    Called as ``chunk(params, targets, images, states, n_steps, t)``, ``t`` the index of
    its first step. ``n_steps`` is traced, so a shorter last chunk reuses the program.
    Returns ``(images, states, history, terms, evaluations, before)``: ``history``
    ``(N, steps_per_call)`` holds the loss before each step (zero from ``n_steps`` on),
    ``terms`` those before the last step; ``before`` is the image before the last step
    (L-BFGS's terms need it; else None).
    """
    return _batch_chunk(program_key(config), tx, loss)


@functools.lru_cache(maxsize=32)
def _batch_chunk(config: StyleConfig, tx: optax.GradientTransformation, loss: Callable) -> Callable:
    step = counted_step(config, tx, loss)
    keep_before = config.optimizer == "lbfgs"

    def per_image(params, targets, x, state, n_steps, t):
        shapes = jax.eval_shape(lambda: step(params, targets, x, state, t)[3])

        def body(i, carry):
            x, state, history, _, evaluations, _ = carry
            new, state, loss, terms, used = step(params, targets, x, state, t + i)
            before = x if keep_before else None
            return new, state, history.at[i].set(loss), terms, evaluations + used, before

        carry = (
            x,
            state,
            jnp.zeros(config.steps_per_call, x.dtype),
            jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
            jnp.zeros((), jnp.int32),
            x if keep_before else None,
        )
        return jax.lax.fori_loop(0, n_steps, body, carry)

    def batched_chunk(params, targets, images, states, n_steps, t):
        one = lambda tg, x, s: per_image(params, tg, x, s, n_steps, t)  # noqa: E731
        return over_batch(config, one)(targets, images, states)

    return jax.jit(batched_chunk, donate_argnums=(2, 3))


def batch_terms(config: StyleConfig, loss: Callable = loss_fn) -> Callable:
    """Jitted ``(params, targets, images, t) -> {term: (N,)}``, a forward pass only (the
    loss terms of L-BFGS runs, whose line search returns totals), as step ``t`` sees it."""
    return _batch_terms(program_key(config), loss)


@functools.lru_cache(maxsize=32)
def _batch_terms(config: StyleConfig, loss: Callable) -> Callable:

    def batched_terms(params, targets, images, t):
        per_image = lambda tg, x: loss(params, x, step_targets(tg, t), config)[1]  # noqa: E731
        if images.shape[0] == 1:  # as over_batch: the per-image program (row_loss's too)
            return jax.tree.map(
                lambda a: a[None], per_image(*jax.tree.map(lambda a: a[0], (targets, images)))
            )
        return jax.vmap(per_image)(targets, images)

    return jax.jit(batched_terms)


def init_states(
    tx: optax.GradientTransformation, images: jax.Array, learning_rates: jax.Array | None = None
) -> optax.OptState:
    """Optimiser states of a batch, each image's ``learning_rate`` hyperparameter set from
    ``learning_rates`` ``(N,)`` when given (a sweep)."""
    states = jax.vmap(tx.init)(images)
    if learning_rates is None:
        return states
    return _set_learning_rates(states, learning_rates)


def _set_learning_rates(states, learning_rates):
    if isinstance(states, WRAPPERS):
        return states._replace(inner=_set_learning_rates(states.inner, learning_rates))
    if not isinstance(getattr(states, "hyperparams", None), dict) or (
        "learning_rate" not in states.hyperparams
    ):
        raise ValueError("a learning_rate sweep needs an optimizer from optax.inject_hyperparams")
    rates = jnp.asarray(learning_rates, states.hyperparams["learning_rate"].dtype)
    return states._replace(hyperparams={**states.hyperparams, "learning_rate": rates})
