"""Dataset jobs: planned from headers, streamed, continued after kills, sharded, on Ray.

Results are compared by their pixels where the runs' commands differ (the PNG's provenance
holds the command), and byte for byte where the same command is rerun.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import dataset
from nst_jax.dataset import buckets, manifest, records
from nst_jax.errors import InputError
from nst_jax.files import image

from conftest import LIGHT, assert_refused, exit_code, snapshot

COMMAND = [sys.executable, "-m", "nst_jax.cli"]


def photo_tree(root: Path, count: int, seed: int = 0, mixed_aspects: bool = False) -> Path:
    """``count`` small images of mixed sizes in nested folders, plus 2 corrupt files and a
    text file (passed over). Their aspects are near square (one bucket: each job compiles
    few programs, for the suite's time), or mixed (every bucket) with ``mixed_aspects``."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        height, width = (int(v) for v in rng.integers(45, 90, 2))  # sides >= 16 at 32 px
        if not mixed_aspects:  # short side >= 0.9 of the long: the square bucket
            height = max(height, int(0.9 * width) + 1)
            width = max(width, int(0.9 * height) + 1)
        folder = root / f"set{k % 3}" / (f"sub{k % 2}" if k % 5 else "")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{k:04d}.png")
    (root / "set0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "set1" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x13" * 20)
    (root / "set2" / "notes.txt").write_text("not an image")
    return root


def job_argv(files: Path, tree: Path, out: Path, *extra) -> list[str]:
    return ["stylize", str(tree), "--style", str(files / "style.png"), "-o", str(out),
            "--weights", str(files / "w.h5"), "--max-dim", "32", "--steps", "4",
            "--steps-per-call", "2", "--batch-size", "8", "--conv", "direct", "-q",
            "--compile-cache", str(files / "cache"), *LIGHT, *extra]  # fmt: skip


def stored_records(out: Path) -> dict[int, dict]:
    """The trusted records of the job in ``out`` (its stored plan's)."""
    return records.read_records(manifest.load_plan(out))


def results(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*.png"))
        if manifest.FOLDER not in p.parts
    }


def pixels(out: Path) -> dict[str, np.ndarray]:
    return {name: image.decode(out / name) for name in results(out)}


@pytest.mark.slow
def test_a_job_mirrors_the_tree_records_failures_and_continues(files, tmp_path, capsys):
    """A small job: outputs mirror the input tree, each unreadable image is one line and a
    record, the text file is passed over in one line, the exit status is 3; rerun, it skips
    every item (the failures too, until their inputs change) and says so."""
    tree = photo_tree(tmp_path / "tree", 10)
    out = tmp_path / "out"
    assert exit_code(job_argv(files, tree, out)) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err, err
    assert "1 file passed over" in err and "notes.txt" in err, err
    written = results(out)
    assert len(written) == 10 and "set0/sub1/img0003.png" in written
    failed = [r["reason"] for r in stored_records(out).values() if r["status"] == "failed"]
    assert len(failed) == 2 and all(failed)
    assert exit_code(job_argv(files, tree, out)) == 3
    assert "0 done, 0 failed, 12 skipped (2 of them failed earlier)" in capsys.readouterr().out
    assert results(out) == written


def kill_once_written(argv: list[str], out: Path, target: int) -> int:
    """Start the job and SIGKILL it as soon as ``target`` results exist (polled every 10 ms:
    the kill lands while batches are being run and written); the results there were then."""
    process = subprocess.Popen([*COMMAND, *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    while process.poll() is None and len(results(out)) < target:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return len(results(out))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_writes_the_uninterrupted_bytes(files, tmp_path):
    """Mixed images in nested folders, 2 corrupt and a text file: killed at a random moment
    of its run (once a random number of results exist) and rerun, the job ends with the
    uninterrupted job's bytes. (16 images and 1 kill here for the suite's time;
    scripts/check_dataset_kills.py runs 240 images and 5 kills.)"""
    tree = photo_tree(tmp_path / "tree", 16)
    out = tmp_path / "out"
    argv = job_argv(files, tree, out, "--batch-size", "2")  # results a few at a time
    assert exit_code(argv) == 3  # in this process, with the command's settings: its bytes
    reference = results(out)
    shutil.rmtree(out)  # the same command into the same folder: the same bytes
    kill_once_written(argv, out, random.Random(7).randint(1, len(reference) - 1))
    final = subprocess.run([*COMMAND, *argv], capture_output=True, text=True)
    assert final.returncode == 3, final.stderr
    assert results(out) == reference  # each output once, byte for byte
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    failed = [r for r in stored_records(out).values() if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["reason"] for r in failed)


@pytest.mark.slow
def test_shards_run_one_after_another_are_the_whole_job(files, tmp_path):
    tree = photo_tree(tmp_path / "tree", 12)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert exit_code(job_argv(files, tree, whole, "--batch-size", "4")) == 3
    argv = lambda out, *extra: job_argv(files, tree, out, "--batch-size", "4", *extra)  # noqa: E731
    codes = [exit_code(argv(parts, "--shard", f"{i}/3")) for i in range(3)]
    assert set(codes) <= {0, 3} and 3 in codes  # each shard exits for its own items
    expected = pixels(whole)
    found = pixels(parts)
    assert sorted(found) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(found[name], value)
    assert len(list(manifest.folder(parts).glob("done-*-of-3.jsonl"))) == 3


@pytest.mark.slow
def test_ray_with_two_workers_is_the_whole_job(files, tmp_path):
    pytest.importorskip("ray")
    tree = photo_tree(tmp_path / "tree", 6)
    whole, on_ray = tmp_path / "whole", tmp_path / "ray"
    assert exit_code(job_argv(files, tree, whole)) == 3
    argv = job_argv(files, tree, on_ray, "--engine", "ray", "--ray-workers", "2")
    done = subprocess.run([*COMMAND, *argv], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    expected, found = pixels(whole), pixels(on_ray)
    assert sorted(found) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(found[name], value)


def plan_of(files, tree, out, config, **job):
    settings = dataset.JobSettings(max_dim=48, **job)
    styles = [str(files / name) for name in ("style.png", "init.png", "content.png")]
    return dataset.plan_job([str(tree)], styles, str(out), config, settings)


def test_styles_per_image_are_the_same_whole_in_shards_in_any_order_and_continued(
    files, tmp_path, monkeypatch
):
    tree = photo_tree(tmp_path / "tree", 30)
    config = nst_jax.StyleConfig(seed=7, content_layers=("block3_conv2",),
                                 style_layers=("block1_conv1", "block3_conv1"))  # fmt: skip
    whole = plan_of(files, tree, tmp_path / "a", config, styles_per_image=2)
    chosen = {(it.input, it.styles) for it in whole.items}
    assert all(len([i for i in whole.items if i.input == it.input]) == 2 for it in whole.items)
    listed = tmp_path / "list.txt"  # the same inputs, listed in another order
    names = sorted({str(Path(it.input).relative_to(tree)) for it in whole.items})
    random.Random(1).shuffle(names)
    listed.write_text("\n".join(names))
    monkeypatch.chdir(tree)  # the list's relative names are the walk's
    settings = dataset.JobSettings(max_dim=48, styles_per_image=2)
    styles = [str(files / n) for n in ("style.png", "init.png", "content.png")]
    again = dataset.plan_job([], styles, str(tmp_path / "b"), config, settings, str(listed))
    assert {(str(tree / it.input), it.styles) for it in again.items} == chosen
    in_shards = {(whole.items[i].input, whole.items[i].styles)
                 for k in range(3) for b in whole.shard(k, 3) for i in b.items}  # fmt: skip
    assert in_shards <= chosen
    assert {(it.input, it.styles) for it in plan_of(files, tree, tmp_path / "c", config,
            styles_per_image=2).items} == chosen  # fmt: skip
    # After a kill, the rerun checks its plan against the manifest the first run wrote and
    # runs that manifest's items: the same styles.
    assert not dataset.start(whole)  # a new job: its manifest written
    continued = manifest.load_plan(tmp_path / "a")
    assert {(it.input, it.styles) for it in continued.items} == chosen
    assert dataset.start(plan_of(files, tree, tmp_path / "a", config, styles_per_image=2))


def test_mixed_shapes_fall_into_few_programs(files, tmp_path):
    """300 images of aspects from 1:4 to 4:1: at most 8 programs (4 ratio classes in two
    orientations, and the job's first image alone), each image stretched by at most its
    class's step."""
    rng = np.random.default_rng(3)
    tree = tmp_path / "tree"
    tree.mkdir()
    for k in range(300):
        height, width = (int(v) for v in rng.integers(16, 96, 2))
        Image.new("RGB", (width, height)).save(tree / f"{k:03d}.png")
    config = nst_jax.StyleConfig(content_layers=("block3_conv2",), style_layers=("block1_conv1",))
    plan = plan_of(files, tree, tmp_path / "out", config)
    programs = {b.key for b in plan.batches}  # 7 buckets, and the first result's batch of 1
    changes = [
        buckets.aspect_change(plan.items[i].shape, batch.shape)
        for batch in plan.batches
        for i in batch.items
    ]
    print(f"{len(programs)} programs: {sorted(programs)}; largest aspect "
          f"change {max(changes):.3f}x")  # fmt: skip
    assert len(programs) <= 8
    inside = [c for b, c in zip([b for b in plan.batches for _ in b.items], changes,
                                strict=True) if min(b.shape) / max(b.shape) > 0.42]  # fmt: skip
    assert max(inside) <= buckets.RATIO_STEP**-0.5 + 0.05  # rounding of a few pixels


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing_listed", "no such file"),
        ("shard_3_of_3", "part 3 of 3 does not exist"),
        ("shard_3_of_2", "part 3 of 2 does not exist"),
        ("shard_0_of_0", "part 0 of 0 does not exist"),
        ("shard_minus_1", "argument --shard"),
        ("styles_per_image_0", "expected a positive integer"),
        pytest.param("other_job", "holds a job with", marks=pytest.mark.slow),
    ],
)
def test_bad_job_input_is_one_line_and_writes_nothing(files, tmp_path, case, fragment, capsys):
    tree = photo_tree(tmp_path / "tree", 3)
    out = files / "out" / "job"
    extra = {
        "missing_listed": ["--files-from", str(files / "list.txt")],
        "shard_3_of_3": ["--shard", "3/3"],
        "shard_3_of_2": ["--shard", "3/2"],
        "shard_0_of_0": ["--shard", "0/0"],
        "shard_minus_1": ["--shard", "-1/2"],
        "styles_per_image_0": ["--styles-per-image", "0"],
        "other_job": ["--tv-weight", "3"],
    }[case]
    (files / "list.txt").write_text(f"{tree}/set0/img0000.png\n{files}/nope.png\n")
    if case == "other_job":
        assert exit_code(job_argv(files, tree, out)) == 3
        capsys.readouterr()
    assert_refused(files, job_argv(files, tree, out, *extra), fragment, capsys=capsys)


@pytest.mark.slow
def test_the_python_api_streams_outcomes(files, tmp_path, params):
    tree = photo_tree(tmp_path / "tree", 4)
    config = nst_jax.StyleConfig(steps=2, steps_per_call=2, conv="direct",
                                 content_layers=("block3_conv2",),
                                 style_layers=("block1_conv1", "block3_conv1"))  # fmt: skip
    plan = dataset.plan_job([str(tree)], [str(files / "style.png")], str(tmp_path / "out"),
                            config, dataset.JobSettings(max_dim=48, batch_size=2))  # fmt: skip
    assert dataset.start(plan) is False
    outcomes = list(dataset.run_job(plan, dataset.Resources(params, config)))
    assert sorted(o.status for o in outcomes) == ["done"] * 4 + ["failed"] * 2
    assert dataset.summary(plan) == {"done": 4, "failed": 2, "pending": 0}
    stored = json.loads((manifest.folder(plan.out) / "plan.json").read_text())
    assert stored["settings_hash"] == plan.settings_hash
    assert snapshot(tmp_path / "out")  # written
    shutil.rmtree(tmp_path / "out")


def test_a_job_applies_its_own_pixel_limit_to_every_content(files, tmp_path, params):
    """Resources.max_pixels (the command's --max-pixels) reaches the job's loading: a content
    over it fails its item with the reason, the others run (the API test's settings, so its
    programs)."""
    tree = photo_tree(tmp_path / "tree", 4)
    sizes = {p: image.probe_size(p) for p in sorted(tree.rglob("img*.png"))}
    style_pixels = np.prod(image.probe_size(files / "style.png"))
    # Just under the smallest content larger than the style: the style passes, and of this
    # tree's contents (3355, 5538, 6225 and 6384 pixels) the two largest do not.
    limit = int(min(h * w for h, w in sizes.values() if h * w > style_pixels)) - 1
    config = nst_jax.StyleConfig(steps=2, steps_per_call=2, conv="direct",
                                 content_layers=("block3_conv2",),
                                 style_layers=("block1_conv1", "block3_conv1"))  # fmt: skip
    plan = dataset.plan_job([str(tree)], [str(files / "style.png")], str(tmp_path / "out"),
                            config, dataset.JobSettings(max_dim=48, batch_size=2))  # fmt: skip
    dataset.start(plan)
    with pytest.raises(InputError, match="max_pixels"):
        next(dataset.run_job(plan, dataset.Resources(params, config, max_pixels=0)))
    outcomes = list(dataset.run_job(plan, dataset.Resources(params, config, max_pixels=limit)))
    over = {str(p) for p, (h, w) in sizes.items() if h * w > limit}
    reasons = {o.item.input: o.reason for o in outcomes if o.item.input in over}
    assert len(reasons) == 2 and all(
        f"px is over the limit of {limit} pixels" in why for why in reasons.values()
    ), reasons
    assert sorted(o.status for o in outcomes) == ["done"] * 2 + ["failed"] * 4


@pytest.mark.slow
def test_a_ray_job_killed_or_stopped_continues_without_ray(files, tmp_path):
    """Killed (SIGKILL) under Ray, the job continues locally to the local job's pixels;
    stopped (SIGTERM) under Ray, it exits 143 keeping its finished results."""
    pytest.importorskip("ray")
    tree = photo_tree(tmp_path / "tree", 6)
    local, out = tmp_path / "local", tmp_path / "ray"
    assert exit_code(job_argv(files, tree, local, "--batch-size", "2")) == 3
    on_ray = job_argv(
        files, tree, out, "--batch-size", "2", "--engine", "ray", "--ray-workers", "1"
    )
    for sig in (signal.SIGKILL, signal.SIGTERM):
        before = len(results(out))
        process = subprocess.Popen([*COMMAND, *on_ray], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 180
        while process.poll() is None and len(results(out)) == before:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(sig)
        _, err = process.communicate()
        if sig == signal.SIGTERM:
            assert process.returncode in (3, 143), err  # 3: it had finished meanwhile
    assert exit_code(job_argv(files, tree, out, "--batch-size", "2")) == 3
    expected, found = pixels(local), pixels(out)
    assert sorted(found) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(found[name], value)
