"""The run's lifecycle, shared by every driver (``stylize``, the frame loop, training):
what a notebook needs to run one as the ``nst-jax`` command does, and what the command is
built from.

- Watching (:class:`Watcher`): progress, a JSON-lines log, previews, a plot, checkpoints
  on a cadence, and stopping when asked, as one hook of the protocol every driver speaks
  (:mod:`nst_jax.events`).
- Checkpoints: a ``stylize`` run's (:class:`RunCheckpoint`, one msgpack file), training's
  (:class:`TrainCheckpoints`, orbax), a video's (its frames folder and record), each
  checked against the run before it is continued.
- The memory plan (:func:`plan_memory`): tiles and the convolution decided from the
  images' headers before any work, returned, never printed.
- Inputs (:mod:`.inputs`): styles at their scale, masks and label masks; outputs
  (:mod:`.outputs`): every path a run writes, checked before any work.
- Lifecycles: :func:`run_single` (one result), :func:`run_job_request` (a dataset job),
  :func:`run_video` (:func:`run_model_video` with a model), :func:`run_training`,
  :func:`run_model`, each taking a typed request
  and a :class:`Control` (the program's phases, signals).

A ``stylize`` run checkpointed, resumed and sized to memory from Python::

    import dataclasses, nst_jax
    from nst_jax import session

    config = session.tiling_default(nst_jax.StyleConfig(steps=1000))
    config = session.plan_memory([("photo", 1, *content.shape[:2])], config).config
    saver = session.RunCheckpoint("out.ckpt", {"config": dataclasses.asdict(config)})
    watcher = session.Watcher(checkpoint=saver, checkpoint_every=100, log=Path("run.jsonl"))
    result = nst_jax.stylize(content, style, params=params, config=config, on_event=watcher)
    watcher.finish()
    # After a kill, the same call with the saved state continues to the same pixels:
    state = saver.load_compatible()
    result = nst_jax.stylize(content, style, params=params, config=config, resume=state)
"""

from __future__ import annotations

from nst_jax.session.checkpoint import RunCheckpoint
from nst_jax.session.control import Control, Stopped
from nst_jax.session.jobs import JobOutcome, run_job_request
from nst_jax.session.memory import MemoryPlan, check_style_memory, plan_memory, tiling_default
from nst_jax.session.model_video import run_model_video
from nst_jax.session.models import ModelRequest, run_model
from nst_jax.session.process import configure_for_program
from nst_jax.session.request import StylizeRequest, checked, is_single
from nst_jax.session.single import SingleOutcome, run_single
from nst_jax.session.train_checkpoints import TrainCheckpoints
from nst_jax.session.training import TrainRequest, run_training
from nst_jax.session.video import VideoRequest, run_video
from nst_jax.session.watch import Watcher

__all__ = [
    "Control",
    "JobOutcome",
    "MemoryPlan",
    "ModelRequest",
    "RunCheckpoint",
    "SingleOutcome",
    "Stopped",
    "StylizeRequest",
    "TrainCheckpoints",
    "TrainRequest",
    "VideoRequest",
    "Watcher",
    "check_style_memory",
    "checked",
    "configure_for_program",
    "is_single",
    "plan_memory",
    "run_job_request",
    "run_model",
    "run_model_video",
    "run_single",
    "run_training",
    "run_video",
    "tiling_default",
]
