"""The one hook protocol of every driver: what ``stylize``, the video frame loop and
feed-forward training tell their ``on_event`` callback, and how a hook ends a run.

Each driver calls ``on_event(event)`` between compiled pieces of work, never inside one:

- ``stylize``: after each chunk of ``steps_per_call`` steps (``kind="chunk"``); ``state``
  is the run's :class:`nst_jax.RunState` (what a checkpoint saves and ``resume`` takes).
- the frame loop (:func:`nst_jax.video.loop.stylize_frames`): after each chunk of a frame's
  steps (``kind="chunk"``) and after each finished frame (``kind="frame"``, ``state`` its
  :class:`~nst_jax.video.loop.FrameResult`).
- training (:func:`nst_jax.feedforward.train.fit`): after each step (``kind="step"``,
  ``state`` the ``{"params", "opt_state", "step"}`` to checkpoint).

A hook raising :class:`StopRun` ends any of them there: ``stylize`` returns the result so
far, the frame loop stops after the frames it finished, training returns its last state.
Any other exception ends the run and propagates. A loss or image that becomes non-finite
ends every driver with the same :class:`DivergedError`, which keeps the last finite state.

:mod:`nst_jax.session` builds its watcher (progress, log, previews, checkpoints) on this
protocol, for every driver alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np


class Event(NamedTuple):
    """What a driver reports to its hook.

    Attributes:
      driver: ``"stylize"``, ``"frames"`` or ``"fit"``.
      kind: ``"chunk"``, ``"frame"`` or ``"step"`` (module docstring).
      step: optimisation steps done so far (stylize: over all scales; frames: over all
        frames of this run; fit: training steps, counted from the run's start).
      total: the steps the run will have done at its end.
      loss: the loss before the last step: ``()``, or ``(N,)`` for a batch.
      terms: that loss's terms (``content``, ``style``, ``tv``, ...), each as ``loss``.
      state: the driver's state (module docstring).
      image: the current image (the first of a batch), for previews; ``None`` for fit.
    """

    driver: str
    kind: str
    step: int
    total: int
    loss: np.ndarray
    terms: dict[str, np.ndarray]
    state: Any
    image: Any = None


Hook = Callable[[Event], None]


class StopRun(Exception):  # noqa: N818 (a request, not an error)
    """Raised by a hook to end the run there: the driver returns what it has done (module
    docstring), as if its steps were all."""


class DivergedError(RuntimeError):
    """The loss or the image became non-finite (too large a learning rate or weight).

    Attributes:
      step: the first step whose loss or update was not finite.
      state: the driver's last finite state (as its events carry it), or ``None`` when the
        run diverged before it had one.
    """

    def __init__(self, step: int, state: Any = None, driver: str = "stylize"):
        super().__init__(f"the run diverged: non-finite loss or image at step {step}")
        self.step, self.state, self.driver = step, state, driver


def first_non_finite(losses: np.ndarray) -> int | None:
    """The index of the first step (the last axis) whose loss is not finite for some image
    of ``losses`` ``(k,)`` or ``(N, k)``, or ``None``."""
    finite = np.all(np.isfinite(np.asarray(losses).reshape(-1, np.shape(losses)[-1])), axis=0)
    return None if finite.all() else int(np.argmin(finite))


def tell(hook: Hook | None, event: Event) -> bool:
    """Give ``event`` to ``hook`` (if any); whether it stopped the run (:class:`StopRun`)."""
    if hook is None:
        return False
    try:
        hook(event)
    except StopRun:
        return True
    return False
