"""Long runs: checkpoints and resume, interrupts, divergence, logs, plots, animations,
provenance, and input protection."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from nst_jax import session
from nst_jax.cli import main as cli
from nst_jax.events import Event
from nst_jax.files import image
from nst_jax.session import checkpoint

from conftest import FAST, LIGHT


def argv(files, out, weights_h5, *extra):
    return ["stylize", str(files / "content.png"), "--style", str(files / "style.png"),
            "-o", str(out), "--weights", weights_h5, *FAST, *LIGHT, *extra]  # fmt: skip


def no_temporaries(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith(".part")]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_image(files, weights_h5, capsys):
    """One command, --resume included, starts the run (there is no checkpoint yet) and,
    rerun after a SIGKILL, continues it to the uninterrupted run's image."""
    steps = ["--steps", "40", "--checkpoint-every", "10"]
    reference = files / "reference.png"
    assert cli.main(argv(files, reference, weights_h5, *steps)) == 0
    killed = files / "killed.png"
    process = subprocess.Popen([sys.executable, "-m", "nst_jax.cli",
                                *argv(files, killed, weights_h5, *steps, "--resume")])  # fmt: skip
    ckpt = checkpoint.directory(killed) / checkpoint.FILE
    deadline = time.monotonic() + 300
    while not ckpt.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved, _ = checkpoint.load(checkpoint.directory(killed))
    assert 10 <= saved.step < 40, f"killed after step {saved.step}: too late to test resuming"
    assert not killed.exists()
    assert cli.main(argv(files, killed, weights_h5, *steps, "--resume")) == 0
    final, _ = checkpoint.load(checkpoint.directory(killed))
    expected, _ = checkpoint.load(checkpoint.directory(reference))
    assert final.step == expected.step == 40
    difference = np.max(np.abs(final.images - expected.images))
    print(f"killed at step {saved.step}, resumed: max abs difference {difference:.1e}")
    assert difference <= 1e-6
    np.testing.assert_allclose(final.losses, expected.losses, rtol=1e-6)
    np.testing.assert_array_equal(image.decode(killed), image.decode(reference))
    # Without a checkpoint, --resume starts afresh, and a file at -o is not the run's own.
    (files / "mine.png").write_bytes(b"the user's own file")
    code = cli.main(argv(files, files / "mine.png", weights_h5, *steps, "--resume"))
    assert code == 2 and "exists" in capsys.readouterr().err
    assert (files / "mine.png").read_bytes() == b"the user's own file"


def test_resume_refuses_another_setting(files, weights_h5, capsys):
    out = files / "a.png"
    assert cli.main(argv(files, out, weights_h5, "--steps", "10", "--checkpoint-every", "10")) == 0
    code = cli.main(argv(files, out, weights_h5, "--steps", "20", "--resume", "--tv-weight", "3"))
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tv-weight 30.0" in err and "--tv-weight 3.0" in err


@pytest.mark.slow
def test_sigint_saves_image_and_checkpoint(files, weights_h5):
    out = files / "interrupted.png"
    # Every single-result run saves its work on Ctrl-C; --log only shows when steps have begun.
    log = files / "run.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_jax.cli", *argv(files, out, weights_h5, "--steps", "100000",
                                                     "--log", str(log))],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "SIGINT at step" in err and "--resume" in err and "Traceback" not in err
    assert image.decode(out).shape == (64, 96, 3)
    state, meta = checkpoint.load(checkpoint.directory(out))
    assert state.step >= 10 and state.step % 10 == 0 and meta["config"]["steps"] == 100000
    assert np.all(np.isfinite(state.images))
    assert no_temporaries(files)


def test_divergence_stops_with_the_step_and_writes_nothing(files, weights_h5, capsys):
    # A style weight near float32's maximum makes the loss overflow to inf, then NaN.
    out = files / "diverged.png"
    code = cli.main(argv(files, out, weights_h5, "--steps", "30", "--style-weight", "1e38",
                         "--checkpoint-every", "10"))  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged" in err and "at step" in err
    assert not out.exists()
    if checkpoint.directory(out).exists():  # any checkpoint is from before the divergence
        state, _ = checkpoint.load(checkpoint.directory(out))
        assert np.all(np.isfinite(state.images))


@pytest.mark.slow
def test_log_plot_previews_animation_and_provenance(files, weights_h5, capsys):
    out = files / "watched.png"
    log, plot, gif = files / "run.jsonl", files / "loss.png", files / "progress.gif"
    watch = ["--save-every", "10", "--log", str(log), "--plot", str(plot), "--animate", str(gif)]
    code = cli.main(argv(files, out, weights_h5, "--steps", "30", *watch))
    assert code == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30]
    for r in records:
        assert set(r) == {"step", "content", "style", "tv", "total", "seconds"}
        assert r["total"] == pytest.approx(r["content"] + r["style"] + r["tv"])
    assert Image.open(plot).format == "PNG" and Image.open(plot).size[0] > 100
    with Image.open(gif) as animation:
        assert animation.format == "GIF" and animation.n_frames == 3
    for step in (10, 20, 30):
        assert image.decode(files / f"watched_{step:04d}.png").shape == (64, 96, 3)
    capsys.readouterr()
    assert cli.main(["info", str(out)]) == 0
    provenance = json.loads(capsys.readouterr().out)
    assert provenance["command"][:2] == ["stylize", str(files / "content.png")]
    assert provenance["config"]["steps"] == 30
    assert len(provenance["weights_md5"]) == 32
    # Previews and plots carry no provenance: --from refuses them with one line.
    assert cli.main(["stylize", "--from", str(files / "loss.png"), "-o", str(out)]) == 2
    assert "no nst_jax provenance" in capsys.readouterr().err


def test_from_replays_the_stored_settings(files, weights_h5, capsys):
    """The stored settings and files, with -o and the weights given: the same image."""
    out = files / "first.png"
    assert cli.main(argv(files, out, weights_h5, "--steps", "3")) == 0
    again = files / "again.png"
    code = cli.main(["stylize", "--from", str(out), "-o", str(again), "--weights", weights_h5,
                     "--steps-per-call", "10", "-q"])  # fmt: skip
    assert code == 0
    np.testing.assert_array_equal(image.decode(again), image.decode(out))


def test_watch_options_need_a_single_result(files, weights_h5, capsys):
    code = cli.main(argv(files, files / "outdir", weights_h5, "--steps", "2",
                         "--tv-weight", "1,2", "--log", str(files / "x.jsonl")))  # fmt: skip
    assert code == 2
    assert "one result at a time" in capsys.readouterr().err


def test_decompression_bomb_is_refused(files, weights_h5, capsys):
    Image.new("RGB", (4000, 3000)).save(files / "big.png")
    code = cli.main(["stylize", str(files / "big.png"), "--style", str(files / "style.png"),
                     "-o", str(files / "o.png"), "--max-pixels", "1000000", "--steps", "1",
                     "--weights", weights_h5])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "4000x3000 px is over the limit of 1000000 pixels" in err and "--max-pixels" in err


def test_output_may_not_replace_an_input(files, weights_h5, capsys):
    before = (files / "content.png").read_bytes()
    code = cli.main(argv(files, files / "content.png", weights_h5, "--steps", "1"))
    assert code == 2
    assert "inputs are never replaced" in capsys.readouterr().err
    assert (files / "content.png").read_bytes() == before
    # --force replaces outputs, never an input.
    assert cli.main(argv(files, files / "content.png", weights_h5, "--force")) == 2
    assert (files / "content.png").read_bytes() == before


def test_a_preview_off_the_plan_never_replaces_a_file(tmp_path):
    """Previews are checked at the steps planned before the run; a scale ended early by tol
    moves the later chunks' steps, and a preview at a step not planned is written only where
    no file is (a user's OUT_0008.png stays as it was)."""
    out = tmp_path / "out.png"
    assert session.Watcher(output=out, save_every=4).previews is None  # any is replaced
    watcher = session.Watcher(
        output=out, save_every=4, previews=frozenset({tmp_path / "out_0004.png"})
    )
    theirs = tmp_path / "out_0008.png"
    theirs.write_bytes(b"a user's file")
    grey = np.full((8, 8, 3), 0.5, np.float32)
    for step in (4, 8, 12):
        watcher(Event("stylize", "chunk", step, 12, np.float32(1), {}, None, grey))
    assert theirs.read_bytes() == b"a user's file"
    for written in ("out_0004.png", "out_0012.png"):  # planned, and new
        assert image.decode(tmp_path / written).shape == (8, 8, 3)
