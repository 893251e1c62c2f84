"""Cases of a fourth hostile probe of dataset jobs and models: pipes where the job's files
are, records of two shard layouts, a tampered manifest, outputs that cannot be written
found before the work, absurd numbers, NUL bytes and control characters in names."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_jobs_hostile import run, small_tree

from nst_jax.dataset import manifest, records
from nst_jax.errors import shown
from nst_jax.files import image

from conftest import (
    assert_refused,
    compile_cache_settings_kept,
    exit_code,
    link_weights,
    snapshot,
)


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory, style_image, weights_h5) -> Path:
    """A folder with a style, the weights, a tree of 4 images and the finished job of them
    (batches of 2), run once per module and worker, with copies of the tree and the job
    kept aside (``done`` puts them back for each test)."""
    place = tmp_path_factory.mktemp("finished_job")
    Image.fromarray(image.to_uint8(style_image)).save(place / "style.png")
    link_weights(weights_h5, place / "w.h5")
    tree, out = small_tree(place / "tree", 4), place / "out"
    with compile_cache_settings_kept():  # the job's --compile-cache is this folder's
        assert run(place, tree, out)[0] == 0
    for name in ("tree", "out"):
        shutil.copytree(place / name, place / f"{name}.kept")
    return place


@pytest.fixture
def done(finished_job) -> tuple[Path, Path, Path]:
    """The folder of ``finished_job`` (its style, weights and compilation cache, as the
    ``files`` fixture's), the tree and the finished job, as they were when it finished
    (copies keep the files' modification times, which the job's records hold)."""
    for name in ("tree", "out"):
        shutil.rmtree(finished_job / name)
        shutil.copytree(finished_job / f"{name}.kept", finished_job / name)
    return finished_job, finished_job / "tree", finished_job / "out"


@pytest.mark.slow
def test_pipes_in_the_job_folder_never_block(done, capsys):
    """A pipe named as another shard's records is skipped; one in place of a result is not
    a finished result; either way the rerun ends (here: redoes that result)."""
    files, tree, out = done
    os.mkfifo(manifest.folder(out) / "done-3-of-7.jsonl")
    code, said, err = run(files, tree, out, capsys=capsys)
    assert code == 2 and "not a regular file" in err, err  # the job's own files: refused
    (manifest.folder(out) / "done-3-of-7.jsonl").unlink()
    victim = sorted(out.glob("*.png"))[0]
    victim.unlink()
    os.mkfifo(victim)
    assert records.file_digest(victim) is None


@pytest.mark.slow
def test_the_newest_record_counts_across_shard_layouts(done, capsys):
    """A failed record in done-0-of-2 older than a done one in done-0-of-1 does not win
    (files were read in name order, and 0-of-2 sorts after 0-of-1)."""
    files, tree, out = done
    folder = manifest.folder(out)
    main = folder / "done-0-of-1.jsonl"
    lines = main.read_bytes().splitlines()
    first = json.loads(lines[0])
    failed = {**first, "status": "failed", "reason": "transient"}
    older = folder / "done-0-of-2.jsonl"
    older.write_text(json.dumps(failed) + "\n")
    stamp = main.stat().st_mtime_ns
    os.utime(older, ns=(stamp - 10**9, stamp - 10**9))
    code, said, _ = run(files, tree, out, capsys=capsys)
    assert code == 0 and "0 failed" in said, said


TAMPERED = {
    "zero_shape": lambda b: b[0].__setitem__(0, [0, 0]),
    "negative_shape": lambda b: b[0].__setitem__(0, [-3, 5]),
    "text_shape": lambda b: b[0].__setitem__(0, ["a", "b"]),
    "huge_slots": lambda b: b[0].__setitem__(3, 10**12),
    "twice": lambda b: b[0].__setitem__(1, [b[0][1][0], b[0][1][0]]),
    "larger_than_max_dim": lambda b: b[0].__setitem__(0, [640, 480]),
    "extra_batch": lambda b: b.append([b[0][0], [0], b[0][2], 2]),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
@pytest.mark.slow
def test_a_tampered_manifest_is_one_line(done, case, capsys):
    files, tree, out = done
    path = manifest.folder(out) / "plan.json"
    stored = json.loads(path.read_text())
    TAMPERED[case](stored["batches"])
    path.write_text(json.dumps(stored))
    code, _, err = run(files, tree, out, capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "damaged job manifest" in err, err


@pytest.mark.slow
def test_outputs_that_cannot_be_written_are_found_before_the_work(files, tmp_path, capsys):
    tree = small_tree(tmp_path / "tree", 2)
    (tree / "sub").mkdir()
    shutil.copy(tree / "img0.png", tree / "sub" / "x.png")
    for case, make, fragment in (
        ("folder", lambda out: (out / "img0.png").mkdir(parents=True), "is a folder"),
        ("file", lambda out: (out.mkdir(), (out / "sub").write_text("x")), "is a file"),
        ("lock", lambda out: (manifest.folder(out) / "lock-0-of-1").mkdir(parents=True),
         "not a regular file"),
    ):  # fmt: skip
        out = tmp_path / f"out_{case}"
        make(out)
        before = snapshot(tmp_path)
        code, _, err = run(files, tree, out, capsys=capsys)
        assert code == 2 and fragment in err and err.count("\n") == 1, (case, err)
        assert snapshot(tmp_path) == before, case


def test_absurd_numbers_and_names_are_one_line(files, tmp_path, capsys):
    tree = small_tree(tmp_path / "tree", 1)
    for option in ("--batch-size", "--max-dim"):
        argv = ["stylize", tree, "--style", files / "style.png", "-o", tmp_path / "o"]
        assert_refused(tmp_path, [*argv, option, str(2**63)], option, capsys=capsys)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"tree/img0.png\x00evil\n")
    style = ["--style", files / "style.png", "--weights", files / "w.h5"]
    argv = ["stylize", "--files-from", listing, *style, "-o", tmp_path / "o"]
    assert_refused(tmp_path, argv, "NUL", capsys=capsys)
    argv = ["stylize", tree, *style, "-o", tree]
    assert_refused(tmp_path, argv, "is the content folder", capsys=capsys)
    assert shown("a\nb\x1b[2J" + os.fsdecode(b"\xff")) == "a\\nb\\x1b[2J\\xff"


def test_a_long_name_is_refused_before_the_work(files, tmp_path, capsys):
    tree = small_tree(tmp_path / "tree", 1)
    shutil.move(tree / "img0.png", tree / ("M" * 246 + ".png"))
    argv = ["stylize", tree, "--style", files / "style.png", "-o", tmp_path / "o", "-q",
            "--weights", files / "w.h5", "--max-dim", "32", "--steps", "1"]  # fmt: skip
    assert_refused(tmp_path, argv, "too long", capsys=capsys)


def test_a_damaged_model_folder_is_one_line_in_a_job(files, tmp_path, capsys):
    tree = small_tree(tmp_path / "tree", 2)
    model = tmp_path / "model"
    model.mkdir()
    record = {"format": "nst_jax-model", "version": 1, "method": "johnson", "settings": {}}
    (model / "model.json").write_text(json.dumps(record))
    argv = ["stylize", tree, "--model", model, "-o", tmp_path / "o", "-q"]
    assert_refused(tmp_path, argv, "params_sha256", capsys=capsys)
    assert exit_code(argv) == 2
