"""The run's lifecycle through the library, for every driver alike (nst_jax.session,
nst_jax.events): what each driver refuses, one divergence error, checkpoints written,
refused and resumed, a checkpoint of an earlier version resumed, the memory plan.

Small images, VGG's first blocks, random weights of the official shapes: these check the
lifecycle, not the pictures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import session
from nst_jax.errors import InputError
from nst_jax.feedforward import train
from nst_jax.session import checkpoint
from nst_jax.video import loop
from nst_jax.video.flow import FrameFlows
from nst_jax.video.settings import VideoSettings

from conftest import eight_bit_image, texture_image

SHALLOW = {"content_layers": ("block2_conv2",), "style_layers": ("block1_conv1", "block2_conv1")}


def still_frames(frame: np.ndarray, count: int):
    """``count`` copies of ``frame`` with zero flows (what the frame loop reads)."""
    zero = np.zeros((1, *frame.shape[:2], 2), np.float32)
    for i in range(count):
        yield i, frame, FrameFlows(zero, zero, np.array([i > 0]), 0.0)


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"scales": 3}, "scales"),
        ({"preserve_color": "luminance"}, "preserve_color"),
        ({"average": 0.5}, "average"),
        ({"init": "style"}, "init"),
        ({"style_weight": (1e-2, 1e-1)}, "style_weight (a sweep)"),
    ],
)
def test_the_frame_loop_refuses_what_it_cannot_honour(params, changes, named):
    """Each was run and silently ignored before: the plain run's frames came back."""
    config = nst_jax.StyleConfig(steps=2, **changes)
    frame = eight_bit_image(32, 32, seed=1)
    with pytest.raises(ValueError, match=re.escape(f"frames cannot honour {named}")):
        loop.stylize_frames(params, still_frames(frame, 1), frame, config, VideoSettings())


def test_training_refuses_what_it_cannot_honour(params):
    settings = train.TrainSettings("johnson", steps=1, batch_size=1, size=16, width=4)
    state = train.init_state(settings.resolved())
    for config, named in (
        (nst_jax.StyleConfig(steps=5, learning_rate=1.0), "fit cannot honour learning_rate, steps"),
        (nst_jax.StyleConfig(tile=256), "fit cannot honour tile"),
    ):
        with pytest.raises(ValueError, match=named):
            train.fit(settings, state, params, iter([]), None, config)
    adain = train.TrainSettings("adain", steps=1, batch_size=1, size=16)
    with pytest.raises(ValueError, match="config: adain trains on its paper's loss"):
        train.fit(adain, state, params, iter([]), None, nst_jax.ObjectiveConfig())


def test_a_huge_learning_rate_cannot_make_an_optimised_image_non_finite(params):
    """Every step projects the image into [0, 1], so its loss stays bounded however large
    the step: stylize (and the frame loop, the same step) diverge only where the loss itself
    overflows (next test). Measured at 1e6 to 1e39 (inf in float32): all finite."""
    content, style = eight_bit_image(32, 32, seed=1), texture_image(32, 32)
    config = nst_jax.StyleConfig(steps=4, steps_per_call=2, learning_rate=1e6, **SHALLOW)
    result = nst_jax.stylize(content, style, params=params, config=config)
    assert np.all(np.isfinite(result.losses)) and float(np.max(result.image)) <= 1.0


def overflowing(**changes) -> nst_jax.StyleConfig:
    """A content weight whose float32 loss overflows after the first step (the content term
    is 0 at the start, the image being the content): the second step's loss is infinite."""
    return nst_jax.StyleConfig(
        steps=4, steps_per_call=1, content_weight=1e38, conv="direct", **SHALLOW, **changes
    )


@pytest.mark.slow
def test_every_driver_raises_the_same_divergence_and_keeps_the_last_finite_state(params):
    content, style = eight_bit_image(32, 32, seed=1), texture_image(32, 32)
    with pytest.raises(nst_jax.DivergedError) as stylized:
        nst_jax.stylize(content, style, params=params, config=overflowing())
    state = stylized.value.state
    assert stylized.value.step == 2 and state.step == 1  # the state after the finite step
    assert np.all(np.isfinite(state.images)) and np.all(np.isfinite(state.losses))
    with pytest.raises(nst_jax.DivergedError) as framed:
        frames = loop.stylize_frames(
            params, still_frames(content, 2), style, overflowing(), VideoSettings()
        )
        list(frames)
    assert framed.value.step == 2 and framed.value.state.step == 1
    assert np.all(np.isfinite(np.asarray(framed.value.state.image)))
    # Training: AdaIN's decoder (no normalisation) at a learning rate of 1e6 overflows at its
    # second step; Johnson's network (instance norm, sigmoid) stays finite there, so it is
    # shown with the overflowing objective.
    fitted = [_diverged_fit(params, "adain", None, 1e6)]
    fitted.append(_diverged_fit(params, "johnson", overflowing().objective, 1e-3))
    for error in fitted:
        params_left = jax.tree.leaves(error.state["params"])
        assert int(error.state["step"]) == error.step - 1
        assert all(np.all(np.isfinite(np.asarray(p))) for p in params_left)
    errors = {type(e) for e in (stylized.value, framed.value, *fitted)}
    assert errors == {nst_jax.DivergedError}


def _diverged_fit(vgg, method: str, objective, learning_rate: float) -> nst_jax.DivergedError:
    rng = np.random.default_rng(0)
    settings = train.TrainSettings(
        method, steps=4, batch_size=1, size=16, learning_rate=learning_rate, width=4,
        residual_blocks=1,
    )  # fmt: skip
    state = train.init_state(settings.resolved())
    styles = [rng.random((1, 16, 16, 3), np.float32) for _ in range(4)]
    batches = [(rng.random((1, 16, 16, 3), np.float32), s if objective is None else None)
               for s in styles]  # fmt: skip
    targets = None
    if objective is not None:
        targets = nst_jax.make_targets(vgg, batches[0][0][0], styles[0][0], objective)
    with pytest.raises(nst_jax.DivergedError) as error:
        train.fit(settings, state, vgg, iter(batches), targets, objective)
    return error.value


def test_a_stylize_run_is_checkpointed_stopped_and_resumed_from_python(params, tmp_path):
    """The library's watcher writes the checkpoints; a stop request saves one; the run
    continued from the file ends with the uninterrupted run's pixels (float32, the same
    programs on the same machine: bit for bit)."""
    content, style = eight_bit_image(32, 48, seed=2), texture_image(32, 32)
    config = nst_jax.StyleConfig(steps=6, steps_per_call=2, **SHALLOW)
    whole = nst_jax.stylize(content, style, params=params, config=config)
    saver = session.RunCheckpoint(tmp_path / "run.ckpt", {"config": dataclasses.asdict(config)})
    watcher = session.Watcher(checkpoint=saver, checkpoint_every=2, log=tmp_path / "run.jsonl")
    watcher.stop = lambda: watcher.last_step >= 4  # as a signal handler would ask
    stopped = nst_jax.stylize(content, style, params=params, config=config, on_event=watcher)
    assert watcher.stopped and stopped.losses.shape == (4,)
    state = saver.load_compatible()
    assert state.step == 4
    resumed = nst_jax.stylize(content, style, params=params, config=config, resume=state)
    np.testing.assert_array_equal(np.asarray(resumed.image), np.asarray(whole.image))
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    other = session.RunCheckpoint(
        saver.folder, {"config": dataclasses.asdict(config.replace(tv_weight=1.0))}
    )
    with pytest.raises(InputError, match="checkpoint has tv_weight=30.0, this run tv_weight=1.0"):
        other.load_compatible()
    # The optimizer's hyperparameters are settings too (found by a hostile probe: a learning
    # rate of 1e6 planted in the checkpoint ran on under the record's 0.02).
    planted = [np.full_like(a, 1e6) if a.shape == (1,) and a.dtype.kind == "f" else a
               for a in state.opt_states]  # fmt: skip
    with pytest.raises(ValueError, match="learning_rate=1e\\+06, this run learning_rate=0.02"):
        nst_jax.stylize(content, style, params=params, config=config,
                        resume=state._replace(opt_states=planted))  # fmt: skip


def test_an_own_optimizer_whose_schedule_moves_its_hyperparameters_resumes(params):
    """Only nst_jax's own optimizers keep constant hyperparameters (checked on resume): a
    schedule given to optax.inject_hyperparams changes its learning rate as it runs."""
    import optax

    from conftest import into

    tx = optax.inject_hyperparams(optax.adam)(learning_rate=optax.linear_schedule(0.02, 0.01, 4))
    content, style = eight_bit_image(16, 24, seed=2), texture_image(16, 16)
    config = nst_jax.StyleConfig(steps=4, steps_per_call=2, **SHALLOW)
    states: list = []
    whole = nst_jax.stylize(content, style, params=params, config=config, optimizer=tx,
                            on_event=into(states))  # fmt: skip
    assert states[0].step == 2
    resumed = nst_jax.stylize(content, style, params=params, config=config, optimizer=tx,
                              resume=states[0])  # fmt: skip
    np.testing.assert_array_equal(np.asarray(resumed.image), np.asarray(whole.image))


OLD_COMMIT = "59cd4d2"  # saved checkpoints from nst_jax.cli.checkpoint, format version 3


def old_checkpoint(folder: Path) -> Path:
    """A checkpoint written by the code of commit 59cd4d2 itself (its ``nst_jax`` taken out
    of this repository's history, run in a child process by ``tests/old_checkpoint.py``):
    the run that script describes, saved after its first chunk (step 3)."""
    root = Path(__file__).resolve().parent.parent
    found = subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"],
                           capture_output=True)  # fmt: skip
    if found.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} is not in this clone's history (a shallow clone)")
    old = folder / "old"
    old.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(root), "archive", OLD_COMMIT, "nst_jax"],
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    images = [folder / "content.npy", folder / "style.npy"]
    np.save(images[0], eight_bit_image(32, 32, seed=1))
    np.save(images[1], texture_image(32, 32))
    script = Path(__file__).parent / "old_checkpoint.py"
    env = dict(os.environ, PYTHONPATH=str(old))
    argv = [sys.executable, str(script), str(folder / "checkpoint"), *map(str, images)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=folder, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "checkpoint"


@pytest.mark.slow
def test_a_checkpoint_written_by_59cd4d2_resumes_to_the_uninterrupted_pixels(
    numpy_params, tmp_path
):
    """A checkpoint written by commit 59cd4d2's code (:func:`old_checkpoint`): the format is
    unchanged (version 3), so this code reads it as it is; resumed, the run ends where this
    code's uninterrupted run ends. Float64, the two codes' different operations: equal within
    1e-10."""
    config = nst_jax.StyleConfig(steps=6, steps_per_call=3, conv="direct")
    folder = old_checkpoint(tmp_path)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), numpy_params)
        content = eight_bit_image(32, 32, seed=1).astype(np.float64)
        style = texture_image(32, 32).astype(np.float64)
        saver = session.RunCheckpoint(folder, {"config": dataclasses.asdict(config)})
        state = saver.load_compatible()
        assert state.step == 3 and state.images.dtype == np.float64
        whole = nst_jax.stylize(content, style, params=params, config=config)
        resumed = nst_jax.stylize(content, style, params=params, config=config, resume=state)
    assert np.max(np.abs(np.asarray(resumed.image) - np.asarray(whole.image))) <= 1e-10
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-10)


def test_a_damaged_or_foreign_checkpoint_is_one_line(params, tmp_path):
    config = nst_jax.StyleConfig(steps=1, **SHALLOW)
    saver = session.RunCheckpoint(tmp_path / "c", {"config": dataclasses.asdict(config)})
    watcher = session.Watcher(checkpoint=saver, checkpoint_every=1)
    nst_jax.stylize(eight_bit_image(16, 16, seed=1), texture_image(16, 16), params=params,
                    config=config, on_event=watcher)  # fmt: skip
    path = tmp_path / "c" / checkpoint.FILE
    assert checkpoint.load(tmp_path / "c")[0].step == 1  # whole, it loads
    whole = path.read_bytes()
    # Found by a hostile probe: a record's digests that are not a table, or nested 10**5
    # deep, and non-finite optimizer moments came back as tracebacks or garbage images.
    from flax import serialization

    good = serialization.msgpack_restore(whole)
    for change, words in (
        ({"meta": json.dumps({"config": {}, "sha256": "x"})}, "sha256 is not a table"),
        ({"meta": json.dumps({"config": {}, "sha256": [1, 2]})}, "sha256 is not a table"),
        ({"meta": '{"config": {}, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"}, "too deeply"),
        ({"opt_leaves": {**good["opt_leaves"], "1": np.array(np.nan, np.float32)}}, "finite"),
    ):
        path.write_bytes(serialization.msgpack_serialize({**good, **change}))
        with pytest.raises(InputError, match=f"damaged checkpoint .*{words}"):
            checkpoint.load(tmp_path / "c")
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="unreadable checkpoint|damaged checkpoint"):
        checkpoint.load(tmp_path / "c")
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        checkpoint.load(tmp_path / "none")


@pytest.mark.slow
def test_the_memory_plan_returns_its_decisions_and_prints_nothing(capsys):
    """Limits are set above what this process already holds (the estimate counts it)."""
    from nst_jax.run import memory

    held = memory.process_rss_bytes() / memory.GIB
    config = session.tiling_default(nst_jax.StyleConfig(steps=10, **SHALLOW))
    assert config.tile == "auto"
    fits = session.plan_memory([("a", 1, 64, 64)], config, limit_gib=held + 64)
    assert fits.config.tile is None and fits.notes == ()
    tight = session.plan_memory([("big", 1, 1536, 1536)], config, limit_gib=held + 1.2)
    assert isinstance(tight.config.tile, int) and tight.notes
    assert "runs in" in tight.notes[0] and "tiles" in tight.notes[0]
    with pytest.raises(InputError, match="no image size fits|fits tiled"):
        session.plan_memory([("huge", 1, 1536, 1536)], config, limit_gib=held / 2)
    assert capsys.readouterr() == ("", "")


def test_a_traced_setting_points_to_the_targets(params):
    def loss(weight):
        return nst_jax.StyleConfig(style_weight=weight).style_weight

    with pytest.raises(TypeError, match=r'targets\["weights"\]'):
        jax.grad(loss)(1.0)


@pytest.mark.parametrize("command", ["stylize", "video", "train"])
def test_every_command_takes_the_same_short_options(command):
    from nst_jax.cli import main as cli

    extra = {"stylize": ["c.png", "-s", "s.png"], "video": ["in.mp4", "-s", "s.png"],
             "train": ["--method", "johnson", "--data", "d", "--style", "s.png"]}  # fmt: skip
    args = cli.build_parser().parse_args([command, *extra[command], "-o", "out", "-q", "-v"])
    assert (args.output, args.quiet, args.verbose) == ("out", True, True)


@pytest.mark.parametrize(
    "command",
    [
        ["stylize", "c.png", "-s", "s.png"],
        ["stylize", "--from", "replayed.png"],  # the pair before the record is read
        ["video", "in.mp4", "-s", "s.png"],
        ["video", "in.mp4", "--model", "m"],
        ["train", "--method", "johnson", "--data", "d", "--style", "s.png"],
    ],
)
def test_every_driver_refuses_resume_with_force_in_one_line(command, tmp_path, capsys, monkeypatch):
    """One rule (session.outputs.check_resume_or_force): before, a single run resumed, a
    video started over and a training refused. Refused before any file is read: none of
    these inputs exists."""
    from conftest import exit_code

    monkeypatch.chdir(tmp_path)
    if "--from" in command:
        (tmp_path / "replayed.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    before = sorted(tmp_path.iterdir())
    assert exit_code([*command, "-o", "out", "--resume", "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nst-jax: error: --resume continues a run, --force starts it over: give one"]
    assert sorted(tmp_path.iterdir()) == before


def test_resume_and_force_are_flags():
    from nst_jax.session import outputs

    for resume, force in (("yes", False), (False, None), (1, False)):
        with pytest.raises(TypeError, match="must be True or False"):
            outputs.check_resume_or_force(resume, force)
