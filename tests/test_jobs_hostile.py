"""Dataset jobs and their library as a hostile user meets them: results edited, deleted or
planted between runs, records tampered with, inputs and styles replaced, odd files in the
tree, odd names, concurrent runs, and every new public function given wrong arguments.

Each refusal asserts the exit status, one stderr line, no traceback and, where nothing may
change, a snapshot of the folder. A job that is continued must end with every result
present once, byte-identical to an uninterrupted job's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_dataset import COMMAND, job_argv, photo_tree, results, stored_records

import nst_jax
from nst_jax import dataset
from nst_jax.dataset import manifest, records
from nst_jax.files import image

from conftest import LIGHT_LAYERS, assert_refused, exit_code


def small_tree(root: Path, count: int = 5, seed: int = 0) -> Path:
    """``count`` valid images of near-square sizes (one bucket) in one folder."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        pixels = rng.integers(0, 256, (48 + k % 3, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{k}.png")
    return root


def run(files, tree, out, *extra, capsys=None) -> tuple[int, str, str]:
    code = exit_code(job_argv(files, tree, out, "--batch-size", "2", *extra))
    captured = capsys.readouterr() if capsys is not None else None
    return code, captured.out if captured else "", captured.err if captured else ""


@pytest.mark.slow
def test_a_redone_batch_keeps_its_finished_items_finished(files, tmp_path, capsys):
    """One result of a batch deleted: the batch is redone and the job finishes (its other
    item stays recorded done), and the next rerun has nothing to do."""
    tree, out = small_tree(tmp_path / "tree"), tmp_path / "out"
    assert run(files, tree, out, capsys=capsys)[0] == 0
    whole = results(out)
    victim = sorted(whole)[1]
    (out / victim).unlink()
    code, said, _ = run(files, tree, out, capsys=capsys)
    assert code == 0 and "1 done" in said and "0 to do" in said, said
    code, said, _ = run(files, tree, out, capsys=capsys)
    assert code == 0 and "0 done" in said and "0 to do" in said, said
    assert results(out) == whole


@pytest.mark.slow
def test_half_a_record_line_left_by_a_kill_loses_no_later_record(files, tmp_path, capsys):
    """A kill mid-append leaves the records' last line cut: that item is redone, and its new
    record is whole, so the next rerun has nothing to do (found by a hostile probe: the new
    record was appended to the cut line and lost, and every rerun redid the item)."""
    tree, out = small_tree(tmp_path / "tree", count=3), tmp_path / "out"
    assert run(files, tree, out, capsys=capsys)[0] == 0
    path = records.records_path(out, (0, 1))
    path.write_bytes(path.read_bytes()[:-40])  # the last record cut in its middle
    code, said, _ = run(files, tree, out, capsys=capsys)
    assert code == 0 and "0 to do" in said, said
    code, said, _ = run(files, tree, out, capsys=capsys)
    assert code == 0 and "0 done" in said and "0 to do" in said, said


@pytest.mark.slow
def test_a_style_changed_under_a_job_is_named_and_refused(files, tmp_path, capsys):
    tree, out = small_tree(tmp_path / "tree"), tmp_path / "out"
    style = tmp_path / "mine.png"
    shutil.copy(files / "style.png", style)
    argv = job_argv(files, tree, out, "--batch-size", "2")
    argv[argv.index(str(files / "style.png"))] = str(style)
    assert exit_code(argv) == 0
    capsys.readouterr()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(style)
    assert_refused(tmp_path, argv, "mine.png", "the style changed", "--force", capsys=capsys)


@pytest.mark.slow
def test_a_done_input_replaced_by_other_pixels_is_redone(files, tmp_path, capsys):
    tree, out = small_tree(tmp_path / "tree"), tmp_path / "out"
    assert run(files, tree, out, capsys=capsys)[0] == 0
    before = results(out)
    pixels = np.asarray(Image.open(tree / "img0.png"))
    Image.fromarray(255 - pixels).save(tree / "img0.png")  # same size, other pixels
    code, said, _ = run(files, tree, out, capsys=capsys)
    assert code == 0 and "1 done" in said, said
    after = results(out)
    assert after["img0.png"] != before["img0.png"]
    assert {k: v for k, v in after.items() if k != "img0.png"} == {
        k: v for k, v in before.items() if k != "img0.png"
    }
    # An input removed: the refusal names it, not the first item after it (a hostile probe
    # found "img2.png differs" for a removed img1.png).
    (tree / "img1.png").unlink()
    code, _, err = run(files, tree, out, capsys=capsys)
    assert code == 2 and "img1.png is no longer among the inputs" in err, err


@pytest.mark.slow
def test_an_output_folder_inside_the_inputs_is_never_walked(files, tmp_path, capsys):
    tree = small_tree(tmp_path / "tree")
    out = tree / "stylised"
    assert run(files, tree, out, capsys=capsys)[0] == 0
    code, said, err = run(files, tree, out, capsys=capsys)
    assert code == 0 and "0 done" in said and "5 skipped" in said, (said, err)


@pytest.mark.slow
def test_only_regular_image_files_are_inputs(files, tmp_path, capsys):
    """A FIFO (which would block a read forever), a text file and a link to nothing are
    passed over with one line, never opened; the job finishes."""
    tree = small_tree(tmp_path / "tree", 3)
    os.mkfifo(tree / "pipe.png")
    (tree / "README.txt").write_text("notes")
    (tree / "gone.png").symlink_to(tmp_path / "nowhere.png")
    code, said, err = run(files, tree, tmp_path / "out", capsys=capsys)
    assert code == 0, err
    assert err.count("\n") == 1 and "3 files passed over" in err, err
    assert "3 done" in said


@pytest.mark.slow
def test_any_name_the_file_system_gives_works(files, tmp_path, capsys):
    """A name that is not UTF-8: hashed, recorded and written by its bytes, shown escaped."""
    tree = small_tree(tmp_path / "tree", 2)
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1, not UTF-8
    shutil.copy(tree / "img0.png", tree / odd)
    out = tmp_path / "out"
    code, said, err = run(files, tree, out, capsys=capsys)
    assert code == 0, err
    assert os.fsencode(odd) in os.listdir(os.fsencode(out))
    assert "3 done" in said
    assert run(files, tree, out, capsys=capsys)[0] == 0  # continued: the record is found


def test_an_unreadable_image_says_why(files, tmp_path, capsys):
    tree = small_tree(tmp_path / "tree", 2)
    data = (tree / "img0.png").read_bytes()
    (tree / "cut.png").write_bytes(data[: len(data) // 3])
    code, _, err = run(files, tree, tmp_path / "out", capsys=capsys)
    assert code == 3 and err.count("\n") == 1, err
    assert "cut.png" in err and "limit" not in err and "max_pixels" not in err, err


def test_a_model_record_asking_for_a_huge_network_is_one_line(files, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    record = {"format": "nst_jax-model", "version": 1, "method": "johnson",
              "settings": {"method": "johnson", "width": 10**9}, "params_sha256": "0"}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(record))
    argv = ["stylize", files / "content.png", "--model", folder, "-o", tmp_path / "x.png"]
    began = time.monotonic()
    assert_refused(tmp_path, argv, "width must be at most 1024", capsys=capsys)
    assert time.monotonic() - began < 30


@pytest.mark.slow
def test_two_identical_jobs_started_together_one_is_refused(files, tmp_path):
    """A shard runs one run at a time (a lock the kernel drops with its process): the second
    of two identical commands is one line and exit 2; the first finishes the job."""
    tree, out = small_tree(tmp_path / "tree", 6), tmp_path / "out"
    # 120 steps: the first runs for seconds after taking its lock (the light objective).
    argv = [*COMMAND, *job_argv(files, tree, out, "--batch-size", "2", "--steps", "120")]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (manifest.folder(out) / "lock-0-of-1").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    second = subprocess.run(argv, capture_output=True, text=True)
    assert second.returncode == 2 and "another run" in second.stderr, second.stderr
    assert second.stderr.count("\n") == 1
    assert first.wait() == 0 and len(results(out)) == 6


def test_a_failed_item_is_retried_once_its_input_is_fixed(files, tmp_path, capsys):
    tree, out = small_tree(tmp_path / "tree", 3), tmp_path / "out"
    good = (tree / "img1.png").read_bytes()
    (tree / "img1.png").write_bytes(good[:200])  # the header reads, the pixels do not
    code, said, err = run(files, tree, out, capsys=capsys)
    assert code == 3 and "1 failed" in said, (said, err)
    code, said, _ = run(files, tree, out, capsys=capsys)  # unchanged: not retried
    assert code == 3 and "0 done" in said and "1 of them failed earlier" in said, said
    # A failure record whose reason is not text is not trusted: the item is tried again
    # (and fails again), and the index holds the new reason, not a dict's repr.
    failed = next(e for e in stored_records(out).values() if e["status"] == "failed")
    tampered = {**failed, "reason": {"planted": [1, 2]}}
    with records.records_path(out, (0, 1)).open("a") as f:
        f.write(json.dumps(tampered) + "\n")
    code, said, _ = run(files, tree, out, capsys=capsys)
    assert code == 3 and "1 failed" in said, said
    index = (manifest.folder(out) / "index-0-of-1.csv").read_text()
    assert "planted" not in index and "img1.png" in index, index
    (tree / "img1.png").write_bytes(good)
    code, said, _ = run(files, tree, out, capsys=capsys)
    assert code == 0 and "1 done" in said and "0 failed" in said, said


@pytest.mark.slow
def test_records_are_never_written_through_a_link_out_of_the_job(files, tmp_path, capsys):
    tree, out = small_tree(tmp_path / "tree", 2), tmp_path / "out"
    assert run(files, tree, out, capsys=capsys)[0] == 0
    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    done = records.records_path(out, (0, 1))
    done.unlink()
    done.symlink_to(outside)
    code, _, err = run(files, tree, out, capsys=capsys)  # refused before any work
    assert code == 2 and "not a regular file" in err and err.count("\n") == 1, err
    assert outside.read_text() == ""


@pytest.mark.slow
def test_records_of_another_plan_or_shard_are_not_trusted(files, tmp_path, capsys):
    """A planted result with a record in a foreign file is redone; so is one whose record
    names another plan."""
    tree, out = small_tree(tmp_path / "tree", 2), tmp_path / "out"
    assert run(files, tree, out, capsys=capsys)[0] == 0
    whole = results(out)
    planted = b"\x89PNG planted"
    (out / "img0.png").write_bytes(planted)
    digest = records.file_digest(out / "img0.png")
    entry = {**stored_records(out)[0], "sha256": digest[0], "size": digest[1]}
    (manifest.folder(out) / "done-7-of-9.jsonl").write_text(json.dumps(entry) + "\n")
    foreign = {**entry, "plan": "0" * 64}
    with records.records_path(out, (0, 1)).open("a") as f:
        f.write(json.dumps(foreign) + "\n")
    code, said, _ = run(files, tree, out, capsys=capsys)
    assert code == 0 and "1 done" in said, said
    assert results(out) == whole


def test_a_manifest_batch_s_shape_or_program_must_follow_from_its_items(files, tmp_path,
                                                                        capsys):  # fmt: skip
    """Found by a hostile probe: a batch's shape set to 8 x 8 ran the rerun's items at that
    size (exit 0, every pixel of the results off by up to 186)."""
    tree, out = small_tree(tmp_path / "tree", 2), tmp_path / "out"
    assert run(files, tree, out, capsys=capsys)[0] == 0
    for result in out.glob("img*.png"):
        result.unlink()
    path = manifest.folder(out) / "plan.json"
    whole = json.loads(path.read_text())
    for damage in ([8, 8], "program"):
        record = json.loads(json.dumps(whole))
        if damage == "program":
            record["batches"][0][2] = [["style_loss", "mean_std"]]
        else:
            record["batches"][0][0] = damage
        path.write_text(json.dumps(record))
        argv = job_argv(files, tree, out, "--batch-size", "2")
        assert_refused(tmp_path, argv, "damaged job manifest (batch 0's shape or program)",
                       capsys=capsys)  # fmt: skip


@pytest.mark.slow
def test_style_folders_lists_and_repeated_stems(files, tmp_path, capsys):
    """``--style FOLDER`` and ``--styles-from LIST``; two styles with one file name get
    distinct names (their folders'), and each result's record names its style."""
    tree = small_tree(tmp_path / "tree", 2)
    for folder in ("a", "b"):
        (tmp_path / "paint" / folder).mkdir(parents=True)
        shutil.copy(files / "style.png", tmp_path / "paint" / folder / "s.png")
    (tmp_path / "paint" / "notes.txt").write_text("passed over")
    out = tmp_path / "out"
    argv = job_argv(files, tree, out, "--batch-size", "2")
    argv[argv.index(str(files / "style.png"))] = str(tmp_path / "paint")
    assert exit_code(argv) == 0, capsys.readouterr().err
    names = sorted(results(out))
    assert names == ["img0_a_s.png", "img0_b_s.png", "img1_a_s.png", "img1_b_s.png"]
    record = image.read_provenance(out / "img0_b_s.png")
    assert record["style"] == [str(tmp_path / "paint" / "b" / "s.png")]
    listed = tmp_path / "styles.txt"
    listed.write_text(f"{files / 'style.png'}\n{files / 'init.png'}\n")
    argv = job_argv(files, tree, tmp_path / "out2", "--batch-size", "2", "--styles-from", listed)
    del argv[argv.index("--style") : argv.index("--style") + 2]
    assert exit_code(argv) == 0
    capsys.readouterr()
    index = (manifest.folder(tmp_path / "out2") / "index-0-of-1.csv").read_text().splitlines()
    assert index[0] == "input,output,styles,seed,status,reason" and len(index) == 5


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("style_is_a_text_file", "not a style image"),
        ("same_input_twice", "given twice"),
        pytest.param("ray_nowhere", "--ray-address", marks=pytest.mark.slow),
    ],
)
def test_a_refused_job_writes_nothing(files, tmp_path, case, fragment, capsys):
    if case == "ray_nowhere":
        pytest.importorskip("ray")
    tree = small_tree(tmp_path / "tree", 2)
    (tmp_path / "notes.txt").write_text("not an image")
    argv = job_argv(files, tree, tmp_path / "out")
    extra = {
        "style_is_a_text_file": ["--style", tmp_path / "notes.txt"],
        "same_input_twice": [],
        "ray_nowhere": ["--engine", "ray", "--ray-address", "ray://127.0.0.1:1"],
    }[case]
    if case == "same_input_twice":
        argv.insert(2, str(tree / "img0.png"))  # a content named beside its folder
    assert_refused(tmp_path, [*argv, *extra], fragment, capsys=capsys)


def test_a_forced_job_never_replaces_a_pipe_where_a_result_goes(files, tmp_path, capsys):
    # --force replaces files only (session.outputs; for root a device would become a file).
    tree = small_tree(tmp_path / "tree", 2)
    out = tmp_path / "out"
    assert run(files, tree, out, capsys=capsys)[0] == 0
    result = sorted(out.glob("*.png"))[0]
    result.unlink()
    os.mkfifo(result)
    argv = [*job_argv(files, tree, out), "--force"]
    assert_refused(tmp_path, argv, result.name, "not a regular file", capsys=capsys)


def test_a_shard_exits_for_its_own_items_only(files, tmp_path, capsys):
    tree = small_tree(tmp_path / "tree", 4)
    data = (tree / "img3.png").read_bytes()
    (tree / "img3.png").write_bytes(data[:200])
    out = tmp_path / "out"
    codes = [run(files, tree, out, "--shard", f"{i}/2", capsys=capsys)[0] for i in range(2)]
    plan = manifest.load_plan(out)
    failing = next(i for i, item in enumerate(plan.items) if item.input.endswith("img3.png"))
    shard_of = next(k for k in range(2) if failing in records.shard_items(plan, (k, 2)))
    assert codes[shard_of] == 3 and codes[1 - shard_of] == 0, codes


@pytest.mark.slow
def test_the_library_job_gives_the_commands_pixels(files, tmp_path, params, capsys):
    """With the command's process settings (``session.configure_for_program``: the suite
    runs with them), the README's library job writes the command's bytes."""
    tree = small_tree(tmp_path / "tree", 3)
    assert run(files, tree, tmp_path / "command", capsys=capsys)[0] == 0
    config = nst_jax.StyleConfig(
        steps=4, steps_per_call=2, conv="direct", **LIGHT_LAYERS
    )  # job_argv's settings
    settings = dataset.JobSettings(max_dim=32, batch_size=2)
    plan = dataset.plan_job(tree, files / "style.png", tmp_path / "library", config, settings)
    dataset.start(plan)
    list(dataset.run_job(plan, dataset.Resources(params, config)))
    command, library = tmp_path / "command", tmp_path / "library"
    decoded = lambda out: {k: image.decode(out / k).tobytes() for k in results(out)}  # noqa: E731
    assert decoded(command) == decoded(library)


@pytest.mark.slow
def test_twenty_rounds_of_damage_and_reruns_end_as_the_uninterrupted_job(files, tmp_path, capsys):
    """Each round deletes or edits a random result, changes a random record, or kills the
    job at a random moment, then reruns it: every round ends with every result present
    once, byte-identical to an uninterrupted job's, and "0 to do". (Reruns run in this
    process, with the command's XLA settings; the kills in a process of their own.)"""
    tree = photo_tree(tmp_path / "tree", 6)
    out = tmp_path / "out"  # the same command into the same folder: the same bytes
    assert run(files, tree, out, capsys=capsys)[0] == 3
    reference = results(out)
    argv = job_argv(files, tree, out, "--batch-size", "2")
    rng = random.Random(11)
    for round_ in range(20):
        what = rng.choice(["delete", "edit", "record", "kill"])
        _damage(what, out, argv, rng)
        code, said, err = run(files, tree, out, capsys=capsys)
        assert code == 3 and "0 to do" in said, (round_, what, said, err)
        assert results(out) == reference, (round_, what)
        assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


def _damage(what: str, out: Path, argv: list, rng: random.Random) -> None:
    names = sorted(results(out))
    if what == "delete":
        (out / rng.choice(names)).unlink()
    elif what == "edit":
        path = out / rng.choice(names)
        data = bytearray(path.read_bytes())
        data[rng.randrange(len(data))] ^= 0xFF
        path.write_bytes(bytes(data))
    elif what == "record":
        path = records.records_path(out, (0, 1))
        lines = path.read_text().splitlines()
        k = rng.randrange(len(lines))
        entry = json.loads(lines[k])
        entry[rng.choice(["sha256", "status", "plan", "item"])] = rng.choice(["x", 0, None])
        lines[k] = json.dumps(entry)
        path.write_text("\n".join(lines) + "\n")
    else:
        process = subprocess.Popen([*COMMAND, *argv], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        # Within the command's run: about 2.2 s here for a rerun that checks a finished
        # job (3.3 s for a whole new job of 6 images).
        time.sleep(rng.uniform(0.5, 3.0))
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_a_results_pixels_do_not_depend_on_its_batch(files, tmp_path, capsys):
    """Every batch of a bucket runs its one program, whose images do not interact: an
    image's result is the same bytes beside other images, at another place in its batch,
    or alone in a padded batch."""
    tree = small_tree(tmp_path / "tree", 5)
    alone = small_tree(tmp_path / "alone", 1)
    shutil.copy(tree / "img3.png", alone / "img0.png")
    assert run(files, tree, tmp_path / "a", capsys=capsys)[0] == 0
    assert run(files, alone, tmp_path / "b", capsys=capsys)[0] == 0
    np.testing.assert_array_equal(
        image.decode(tmp_path / "a" / "img3.png"), image.decode(tmp_path / "b" / "img0.png")
    )
