"""``nst-jax train`` and ``stylize --model``: the data stream, exact resume after SIGKILL,
model folders checked on load, and bad input refused in one line with nothing written.

Networks here are tiny (Johnson width 4, one residual block; 16 px crops) on random test
weights: these tests check the machinery, not the quality.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_jax.feedforward import data
from nst_jax.feedforward import model as models
from nst_jax.files import image, weights
from nst_jax.session.models import export_onnx

from conftest import assert_refused, eight_bit_image, exit_code, link_weights, snapshot

STEPS = 120


@pytest.fixture(scope="module")
def place(tmp_path_factory, weights_h5) -> Path:
    """data/ (6 images of mixed sizes), styles/ (3), style.png, the weights, empty/."""
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for folder, count in (("data", 6), ("styles", 3)):
        (root / folder).mkdir()
        for i in range(count):
            h, w = rng.integers(20, 40, 2)
            pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i}.png")
    shutil.copy(root / "styles" / "0.png", root / "style.png")
    link_weights(weights_h5, root / "w.h5")
    (root / "empty").mkdir()
    return root


def johnson_argv(place: Path, out: Path, *extra) -> list:
    return [
        "train", "--method", "johnson", "--style", place / "style.png", "--data",
        place / "data", "-o", out, "--steps", STEPS, "--batch-size", 2, "--size", 16,
        "--width", 4, "--residual-blocks", 1, "--checkpoint-every", 16, "--content-layers",
        "block1_conv2", "--style-layers", "block1_conv1", "--weights",
        place / "w.h5", "--quiet", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def johnson_model(place) -> Path:
    out = place / "johnson"
    assert exit_code(johnson_argv(place, out)) == 0
    return out


@pytest.fixture(scope="module")
def adain_model(place) -> Path:
    out = place / "adain"
    argv = ["train", "--method", "adain", "--styles", place / "styles", "--data", place / "data",
            "-o", out, "--steps", 3, "--batch-size", 2, "--size", 16, "--weights",
            place / "w.h5", "--quiet"]  # fmt: skip
    assert exit_code(argv) == 0
    return out


def test_a_step_s_batch_depends_on_the_seed_and_step_alone(place):
    files = data.image_files(place / "data").files
    whole = list(data.batches(files, 4, 16, seed=3, steps=range(0, 5)))
    later = list(data.batches(files, 4, 16, seed=3, steps=range(2, 5)))
    assert all(np.array_equal(a, b) for a, b in zip(whole[2:], later, strict=True))
    other = next(data.batches(files, 4, 16, seed=4, steps=range(0, 1)))
    assert not np.array_equal(whole[0], other)
    # An epoch (6 files, batches of 4: steps 0 and half of 1) visits every file once.
    visited = data.batch_indices(6, 4, 0, 3, 0) + data.batch_indices(6, 4, 1, 3, 0)[:2]
    assert sorted(visited) == list(range(6))
    assert whole[0].shape == (4, 16, 16, 3) and whole[0].dtype == np.float32


@pytest.mark.slow
def test_a_damaged_training_checkpoint_is_one_line_in_a_process_of_its_own(place, johnson_model):
    """Found by a hostile probe: after the one line, orbax's failed restore left about ten
    'Event loop is closed' tracebacks on stderr (tensorstore's reads finishing after its
    asyncio loop closed)."""
    damaged = place / "damaged_run"
    shutil.copytree(johnson_model, damaged)
    last = max(
        (damaged / "checkpoints").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1
    )
    for chunk in last.rglob("d/*"):
        chunk.write_bytes(chunk.read_bytes()[:10])
    argv = [
        sys.executable,
        "-m",
        "nst_jax.cli.main",
        *map(str, johnson_argv(place, damaged, "--resume")),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"damaged checkpoint at step {last.name}" in done.stderr and "<bound" not in done.stderr


def test_an_export_never_replaces_an_input_a_run_s_file_or_a_pipe(place, johnson_model, tmp_path,
                                                                   capsys):  # fmt: skip
    """Found by a hostile probe: with --force, ``models export`` wrote over the file given
    as --weights (which a johnson model does not read), the training's own record, and a
    pipe or a device (for root, /dev/null became a regular file)."""
    keep = tmp_path / "keep.h5"
    keep.write_bytes(b"not replaced")
    export = ["models", "export", johnson_model]
    assert_refused(tmp_path, [*export, "-o", keep, "--force", "--weights", keep],
                   "inputs are never replaced", capsys=capsys)  # fmt: skip
    assert_refused(johnson_model, [*export, "-o", johnson_model / "train.json", "--force"],
                   "inputs are never replaced", capsys=capsys)  # fmt: skip
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_refused(tmp_path, [*export, "-o", fifo, "--force"], "pipe: not a regular file",
                   capsys=capsys)  # fmt: skip
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    with pytest.raises(TypeError, match="force must be True or False"):
        export_onnx(str(johnson_model), str(tmp_path / "x.onnx"), force="no")
    with pytest.raises(TypeError, match="model must be a model folder's path"):
        export_onnx(None, str(tmp_path / "x.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.h5", "pipe"]


def test_orbax_s_tolerated_errors_are_not_printed(place, johnson_model, caplog, capsys):
    """Found by a hostile probe: a checkpoint's metadata file holding garbage, which orbax
    reads past, printed its error log (two lines a read, 13 lines in all) before the run's
    own line; the run resumes as it would have."""
    damaged = place / "damaged_metadata"
    shutil.copytree(johnson_model, damaged)
    for metadata in (damaged / "checkpoints").glob("*/_CHECKPOINT_METADATA"):
        metadata.write_text("garbage{{\n")
    assert exit_code(johnson_argv(place, damaged, "--resume")) == 0
    assert "trained johnson" in capsys.readouterr().out
    assert not [r for r in caplog.records if "orbax" in r.pathname], caplog.text
    assert (damaged / models.PARAMS_FILE).read_bytes() == (
        johnson_model / models.PARAMS_FILE
    ).read_bytes()


@pytest.mark.slow
def test_training_killed_by_sigkill_resumes_to_bit_identical_params(place, johnson_model):
    # One command, --resume included, starts the run and continues it after the kill.
    killed = place / "killed"
    command = [sys.executable, "-m", "nst_jax.cli.main",
               *map(str, johnson_argv(place, killed, "--resume"))]  # fmt: skip
    process = subprocess.Popen(command)
    log, deadline = killed / "log.jsonl", time.monotonic() + 120
    while process.poll() is None and (not log.exists() or log.read_text().count("\n") < 40):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / models.RECORD_FILE).exists()  # killed mid-run
    assert exit_code(johnson_argv(place, killed)) == 2  # a run is there: --resume or --force
    assert exit_code(johnson_argv(place, killed, "--resume")) == 0
    params = models.PARAMS_FILE
    assert (killed / params).read_bytes() == (johnson_model / params).read_bytes()
    losses = [[json.loads(line)["total"] for line in (folder / "log.jsonl").open()]
              for folder in (killed, johnson_model)]  # fmt: skip
    assert losses[0] == losses[1] and len(losses[0]) == STEPS


@pytest.mark.slow
def test_a_johnson_model_applies_alone_and_in_a_job(place, johnson_model, capsys):
    out = place / "one.png"
    content = place / "data" / "0.png"
    argv = ["stylize", content, "--model", johnson_model, "-o", out, "--max-dim", 32]
    assert exit_code(argv) == 0
    model = models.load_model(johnson_model, "johnson")
    expected = models.apply_model(model, image.load(content, 32)[None])[0]
    np.testing.assert_array_equal(image.decode(out), image.to_uint8(expected) / np.float32(255))
    assert image.read_provenance(out)["model"]["method"] == "johnson"
    job = ["stylize", place / "data", "--model", johnson_model, "-o", place / "job", "-q",
           "--max-dim", 32]  # fmt: skip
    assert exit_code(job) == 0
    assert len(list((place / "job").glob("*.png"))) == 6
    capsys.readouterr()
    assert exit_code(job) == 0  # a rerun continues the job: nothing left to do
    assert "0 done" in capsys.readouterr().out


@pytest.mark.slow
def test_an_adain_model_takes_styles_and_alpha(place, adain_model):
    content, outs = place / "data" / "1.png", {}
    for name, extra in (("a1", ()), ("a0", ("--alpha", 0)), ("mix", ("--style-blend", "0.5,0.5"))):
        styles = ["--style", place / "styles" / "0.png"]
        if name == "mix":
            styles += ["--style", place / "styles" / "1.png"]
        argv = ["stylize", content, "--model", adain_model, *styles, "-o", place / f"{name}.png",
                "--weights", place / "w.h5", "--max-dim", 32, *extra]  # fmt: skip
        assert exit_code(argv) == 0
        outs[name] = image.decode(place / f"{name}.png")
    assert outs["a1"].shape == image.load(content, 32).shape
    assert np.abs(outs["a1"] - outs["a0"]).max() > 0  # alpha matters
    assert np.abs(outs["a1"] - outs["mix"]).max() > 0  # so does the second style


def test_bad_input_is_one_line_exit_2_and_nothing_written(place, johnson_model, capsys):
    damaged = place / "damaged"
    shutil.copytree(johnson_model, damaged)
    payload = bytearray((damaged / models.PARAMS_FILE).read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    (damaged / models.PARAMS_FILE).write_bytes(payload)
    broken = place / "broken"
    shutil.copytree(johnson_model, broken)
    (broken / models.RECORD_FILE).write_text("{")
    content, w = place / "data" / "0.png", place / "w.h5"
    mixed = place / "mixed"  # data plus a file passed over: its note must not join the line
    if not mixed.exists():
        shutil.copytree(place / "data", mixed)
        (mixed / "notes.txt").write_text("not an image")
    cases = {
        "inside the data": johnson_argv(place, place / "data" / "m"),
        "johnson with a styles folder": [*johnson_argv(place, place / "n"), "--styles",
                                         place / "styles"],
        "adain without styles": ["train", "--method", "adain", "--data", place / "data",
                                 "-o", place / "n", "--weights", w],
        "a run there, a file passed over": johnson_argv(place, johnson_model, "--data", mixed),
        "no images": johnson_argv(place, place / "new", "--data", place / "empty"),
        "another method's run": ["train", "--method", "adain", "--styles", place / "styles",
                                 "--data", place / "data", "-o", johnson_model, "--resume",
                                 "--weights", w],
        "a style for johnson": ["stylize", content, "--model", johnson_model, "--style",
                                place / "style.png", "-o", place / "x.png"],
        "alpha 2": ["stylize", content, "--model", johnson_model, "--alpha", 2,
                    "-o", place / "x.png"],
        "damaged params": ["stylize", content, "--model", damaged, "-o", place / "x.png"],
        "damaged record": ["stylize", content, "--model", broken, "-o", place / "x.png"],
        "not a model": ["stylize", content, "--model", place / "data", "-o", place / "x.png"],
        # The output rule of a run without --model: one file, an unknown extension refused
        # (it made a job folder named x.tif).
        "an unknown extension": ["stylize", content, "--model", johnson_model,
                                 "-o", place / "x.tif"],
    }  # fmt: skip
    expected = {
        "inside the data": "lies inside --data",
        "johnson with a styles folder": "--styles DIR is adain's",
        "adain without styles": "give --styles DIR",
        "a run there, a file passed over": "holds a training run",
        "no images": "no readable images",
        "another method's run": "a johnson training run",
        "a style for johnson": "has its style built in",
        "alpha 2": "alpha must be a number from 0 to 1",
        "damaged params": "damaged",
        "damaged record": "damaged model record",
        "not a model": "not a model folder",
        "an unknown extension": "unknown output extension '.tif'",
    }
    capsys.readouterr()
    for name, argv in cases.items():
        before = snapshot(place)
        assert exit_code(argv) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected[name] in err, (name, err)
        assert snapshot(place) == before, name


@pytest.mark.slow
def test_bad_training_images_are_passed_over_and_never_fatal(place, capsys, tmp_path):
    """A text file and a header-less file are passed over at the start (one line); a JPEG
    cut short, whose header reads, is replaced by the next readable image when its crop
    comes, so the run ends, and a killed-and-resumed run reads the same batches."""
    data = tmp_path / "data"
    shutil.copytree(place / "data", data)
    (data / "notes.txt").write_text("not an image")
    (data / "empty.png").write_bytes(b"")
    Image.open(data / "0.png").convert("RGB").save(data / "cut.jpg")
    whole = (data / "cut.jpg").read_bytes()
    (data / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # its header reads
    argv = johnson_argv(place, tmp_path / "m", "--steps", 8, "--checkpoint-every", 4)
    argv[argv.index(place / "data")] = data
    assert exit_code(argv) == 0
    err = capsys.readouterr().err
    assert "2 files passed over" in err and "could not be decoded" in err, err
    crops = list(__import__("nst_jax.feedforward.data", fromlist=["batches"]).batches(
        data_files(data), 2, 16, seed=0, steps=range(8)))  # fmt: skip
    assert all(np.all(np.isfinite(c)) for c in crops)


def data_files(folder: Path) -> list:
    return data.image_files(folder).files


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("empty_data", "no readable images"),
        ("all_corrupt", "no readable images"),
        ("batch_size_0", "expected a positive integer"),
        ("negative_seed", "seed must be an integer in [0, 2**63), got -1"),
        ("existing_model_folder", "holds a training run"),
    ],
)
def test_training_inputs_refused_in_one_line(place, johnson_model, tmp_path, case, fragment,
                                             capsys):  # fmt: skip
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "a.png").write_bytes(b"\x89PNG nothing")
    out = johnson_model if case == "existing_model_folder" else tmp_path / "new"
    argv = johnson_argv(place, out)
    if case == "empty_data":
        argv[argv.index(place / "data")] = place / "empty"
    elif case == "all_corrupt":
        argv[argv.index(place / "data")] = tmp_path / "corrupt"
    elif case == "batch_size_0":
        argv[argv.index("--batch-size") + 1] = 0
    elif case == "negative_seed":
        argv += ["--seed", -1]
    before = snapshot(place)
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert snapshot(place) == before


TRAINING_REFUSALS = {
    # --plot is an output like any other: inputs never replaced, a file only with --force.
    "plot_over_a_training_image": (
        ["--plot", "{place}/data/0.png"],
        "--plot would replace the input",
    ),
    "plot_over_the_style": (["--plot", "{place}/style.png"], "--plot would replace the input"),
    "plot_over_a_file": (["--plot", "{tmp}/old.png"], "exists; --force replaces it (--plot)"),
    # A network learns one objective: sweeps, blends and lists of losses are stylize's.
    "weight_sweep": (["--content-weight", "1,2"], "--content-weight: a training run takes one"),
    "blend": (["--style-blend", "1,2"], "--style-blend: johnson trains one --style"),
    "style_losses": (["--style-loss", "gram,w2"], "--style-loss: a training run takes one"),
    "unknown_extractor": (["--extractor", "bogus"], "--extractor bogus: unknown extractor"),
    "dangling_link_output": (["-o", "{tmp}/dangling"], "a symbolic link to nothing"),
    "empty_output": (["-o", ""], "-o: an empty path"),
}


@pytest.mark.parametrize("case", TRAINING_REFUSALS)
def test_training_refuses_what_it_cannot_honour_or_would_replace(place, tmp_path, case, capsys):
    """Each was a traceback, a silently dropped setting or a replaced input (a hostile
    probe); now one line before any work, nothing changed."""
    extra, fragment = TRAINING_REFUSALS[case]
    (tmp_path / "old.png").write_bytes(b"a user's file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "model")
    extra = [str(a).format(place=place, tmp=tmp_path) for a in extra]
    before, mine = snapshot(place), snapshot(tmp_path)
    assert exit_code(johnson_argv(place, tmp_path / "new", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err, err
    assert snapshot(place) == before and snapshot(tmp_path) == mine


@pytest.mark.slow
def test_one_image_and_crops_larger_than_it_train(place, tmp_path):
    (tmp_path / "one").mkdir()
    shutil.copy(place / "data" / "0.png", tmp_path / "one" / "0.png")
    argv = johnson_argv(place, tmp_path / "m", "--steps", 2, "--size", 64)
    argv[argv.index(place / "data")] = tmp_path / "one"
    assert exit_code(argv) == 0
    assert (tmp_path / "m" / models.PARAMS_FILE).exists()


@pytest.mark.slow
def test_sigterm_during_training_and_a_model_job_keeps_what_is_done(place, johnson_model,
                                                                     tmp_path):  # fmt: skip
    """SIGTERM mid-training: exit 143, one line, the checkpoint kept, and ``--resume`` ends
    with the uninterrupted params. Mid model job: 143, finished results kept, the rerun
    completes the job."""
    out = tmp_path / "m"
    command = [sys.executable, "-m", "nst_jax.cli.main", *map(str, johnson_argv(place, out))]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and (
        not (out / "log.jsonl").exists() or (out / "log.jsonl").read_text().count("\n") < 20
    ):
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate()
    assert process.returncode == 143 and "checkpoint is kept" in err, err
    assert exit_code(johnson_argv(place, out, "--resume")) == 0
    params = models.PARAMS_FILE
    assert (out / params).read_bytes() == (johnson_model / params).read_bytes()
    job = [sys.executable, "-m", "nst_jax.cli.main", "stylize", str(place / "data"), "--model",
           str(johnson_model), "-o", str(tmp_path / "job"), "--max-dim", "32", "--batch-size",
           "1", "-q"]  # fmt: skip
    process = subprocess.Popen(job, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and not list((tmp_path / "job").glob("*.png")):
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate()
    assert process.returncode in (0, 143), err
    finished = subprocess.run(job, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert len(list((tmp_path / "job").glob("*.png"))) == 6


@pytest.mark.slow
def test_trained_models_exported_to_onnx_equal_their_apply(place, johnson_model, adain_model,
                                                           tmp_path):  # fmt: skip
    """``models export`` then onnxruntime, against ``apply_model`` (float32 both; bound
    1e-4 as for the imported networks, tests/test_magenta.py), at sides that are not
    multiples of the networks' 4 and 8 (the graph reflects and crops as apply does)."""
    ort = pytest.importorskip("onnxruntime")
    contents = np.stack([eight_bit_image(26, 30, seed=k) for k in (0, 1)])
    style = image.load(place / "styles" / "0.png", 32)
    runs = {}
    for name, folder, extra in (("johnson", johnson_model, ()),
                                ("adain", adain_model, ("--weights", place / "w.h5"))):  # fmt: skip
        out = tmp_path / f"{name}.onnx"
        assert exit_code(["models", "export", folder, "-o", out, *extra]) == 0
        runs[name] = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    nchw = contents.transpose(0, 3, 1, 2)
    got = runs["johnson"].run(None, {"image": nchw})[0].transpose(0, 2, 3, 1)
    expected = models.apply_model(models.load_model(johnson_model), contents, conv="direct")
    assert np.abs(got - np.asarray(expected)).max() <= 1e-4
    inputs = {"image": nchw, "style": style.transpose(2, 0, 1)[None],
              "alpha": np.array([0.8], np.float32)}  # fmt: skip
    got = runs["adain"].run(None, inputs)[0].transpose(0, 2, 3, 1)
    vgg = weights.load_vgg19(place / "w.h5")
    expected = models.apply_model(models.load_model(adain_model), contents, vgg, [style],
                                  alpha=0.8, conv="direct")  # fmt: skip
    assert np.abs(got - np.asarray(expected)).max() <= 1e-4
