"""Never lose a user's file: every path checked before the work, ``--from`` as untrusted data,
checkpoints checked against their inputs, numbers validated, environment faults reported.

Each refused case asserts: exit status 2, one stderr line naming the path and the fault, no
traceback, every input byte-identical afterwards and nothing written anywhere in the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flax import serialization
from PIL import Image, PngImagePlugin

from nst_jax.files import image
from nst_jax.session import checkpoint

from conftest import FAST, assert_refused, compiles_recorded, exit_code, snapshot


def stylize_argv(files: Path, *extra, out: str | None = "out/r.png") -> list[str]:
    argv = ["stylize", str(files / "content.png"), "--style", str(files / "style.png")]
    argv += ["-o", str(files / out)] if out else []
    return [*argv, "--weights", str(files / "w.h5"), "--steps", "2", *FAST, *extra]


# Each case: (extra argv, output path or None, what the one line must contain).
PATH_CASES = {
    "log_is_content": (["--log", "{f}/content.png"], "out/r.png", ["content.png", "input"]),
    "log_is_weights": (["--log", "{f}/w.h5"], "out/r.png", ["w.h5", "input"]),
    "log_is_style": (["--log", "{f}/style.png"], "out/r.png", ["style.png", "input"]),
    "plot_is_content": (["--plot", "{f}/content.png"], "out/r.png", ["content.png", "input"]),
    "plot_format_unknown": (["--plot", "{f}/out/loss.txt"], "out/r.png", ["loss.txt", "png"]),
    "sheet_is_content": (["--sheet", "{f}/content.png"], "out/r.png", ["content.png", "input"]),
    "output_is_content": ([], "content.png", ["content.png", "input"]),
    "output_is_content_forced": (["--force"], "content.png", ["content.png", "input"]),
    "output_is_style": ([], "style.png", ["style.png", "input"]),
    "output_is_init": (["--init", "{f}/init.png"], "init.png", ["init.png", "input"]),
    "output_is_weights_copy": ([], "w.h5", ["w.h5"]),
    "output_is_a_link_to_content": ([], "link.png", ["link.png", "input"]),
    "output_is_a_hard_link_to_content": ([], "hard.png", ["hard.png", "input"]),
    "preview_is_content": (["--save-every", "2"], "content", ["r_0002.png", "input"]),
    "preview_is_style": (["--save-every", "1", "--steps-per-call", "1"], "style", ["input"]),
    "log_equals_output": (["--log", "{f}/out/r.png"], "out/r.png", ["r.png", "twice"]),
    "plot_equals_log": (
        ["--log", "{f}/out/x.png", "--plot", "{f}/out/x.png"],
        "out/r.png",
        ["x.png", "twice"],
    ),
    "sheet_equals_output": (["--sheet", "{f}/out/r.png"], "out/r.png", ["r.png", "twice"]),
    "output_is_a_folder": ([], "out/dir.png", ["dir.png", "is a folder"]),
    "log_is_a_folder": (["--log", "{f}/out"], "out/r.png", ["out", "is a folder"]),
    "checkpoint_folder_is_a_file": ([], "out/c.png", ["c.png.ckpt", "is a file"]),
    "output_under_a_file": ([], "regular/r.png", ["regular", "is a file"]),
    "log_under_a_file": (["--log", "{f}/regular/log.jsonl"], "out/r.png", ["is a file"]),
    "output_unwritable": ([], "/proc/nst_r.png", ["/proc/nst_r.png", "cannot write"]),
    "log_unwritable": (["--log", "/proc/nst.jsonl"], "out/r.png", ["/proc", "cannot write"]),
    "compile_cache_is_a_file": (
        ["--compile-cache", "{f}/regular"],
        "out/r.png",
        ["regular", "--compile-cache"],
    ),
    "compile_cache_unwritable": (
        ["--compile-cache", "/proc/nst_cache"],
        "out/r.png",
        ["/proc", "cannot write"],
    ),
    "existing_output": ([], "out/old.png", ["old.png", "exists", "--force"]),
    # --force replaces files only: for root, a device node would become a regular file.
    "output_is_a_pipe_forced": (["--force"], "out/pipe.png", ["pipe.png", "not a regular file"]),
    "existing_log": (["--log", "{f}/out/old.jsonl"], "out/r.png", ["old.jsonl", "exists"]),
    # A link to nothing: refused before the work, not after it (found by a hostile probe).
    "output_is_a_dangling_link": ([], "out/gone.png", ["gone.png", "exists", "--force"]),
    "log_is_a_dangling_link": (["--log", "{f}/out/gone.jsonl"], "out/r.png", ["gone.jsonl"]),
    "existing_checkpoint": ([], "out/k.png", ["checkpoint.msgpack", "exists"]),
    "animate_without_frames": (["--animate", "{f}/out/a.gif"], "out/r.png", ["--save-every"]),
    "animate_is_style": (
        ["--animate", "{f}/style.gif", "--save-every", "1"],
        "out/r.png",
        ["style.gif", "input"],
    ),
}


def prepare_case(files: Path, case: str) -> None:
    """The files some cases need on disk beforehand."""
    if case == "output_is_a_link_to_content":
        (files / "link.png").symlink_to(files / "content.png")
    if case == "output_is_a_hard_link_to_content":
        os.link(files / "content.png", files / "hard.png")
    if case == "output_is_a_folder":
        (files / "out" / "dir.png").mkdir()
    if case == "checkpoint_folder_is_a_file":
        (files / "out" / "c.png.ckpt").write_text("x")
    if case == "existing_output":
        shutil.copy(files / "style.png", files / "out" / "old.png")
    if case == "existing_log":
        (files / "out" / "old.jsonl").write_text("{}\n")
    if case in ("output_is_a_dangling_link", "log_is_a_dangling_link"):
        suffix = ".png" if case.startswith("output") else ".jsonl"
        (files / "out" / f"gone{suffix}").symlink_to(files / "nowhere" / "x")
    if case == "output_is_a_pipe_forced":
        os.mkfifo(files / "out" / "pipe.png")
    if case == "existing_checkpoint":
        (files / "out" / "k.png.ckpt").mkdir()
        (files / "out" / "k.png.ckpt" / checkpoint.FILE).write_bytes(b"x")


@pytest.mark.parametrize("case", sorted(PATH_CASES))
def test_a_path_that_would_lose_a_file_is_refused_before_any_work(files, case, capsys):
    extra, out, fragments = PATH_CASES[case]
    prepare_case(files, case)
    extra = [e.replace("{f}", str(files)) for e in extra]
    argv = stylize_argv(files, *extra, out=None)
    if case == "preview_is_style":  # the style is named as the second preview would be
        os.replace(files / "style.png", files / "out" / "r_0002.png")
        argv = [
            a.replace(str(files / "style.png"), str(files / "out" / "r_0002.png")) for a in argv
        ]
        out = "out/r.png"
    if case == "preview_is_content":  # the content is named as the preview would be
        os.replace(files / "content.png", files / "out" / "r_0002.png")
        argv = [
            a.replace(str(files / "content.png"), str(files / "out" / "r_0002.png")) for a in argv
        ]
        out = "out/r.png"
    if case == "animate_is_style":
        Image.open(files / "style.png").save(files / "style.gif")
        argv = [a.replace(str(files / "style.png"), str(files / "style.gif")) for a in argv]
    argv[argv.index("--weights") : argv.index("--weights")] = ["-o", str(files / out)]
    assert_refused(files, argv, *fragments, capsys=capsys)


def test_clashing_result_names_are_refused(files, capsys):
    """A sweep whose values print alike would leave one file for two results. (Two styles
    with one file name are told apart by their folders: tests/test_jobs_hostile.py.)"""
    argv = ["stylize", files / "content.png", "--style", files / "style.png", "-o",
            files / "out", "--style-weight", "1e-3,0.001", "--weights", files / "w.h5",
            *FAST]  # fmt: skip
    assert_refused(files, argv, "content_sw0.001", capsys=capsys)


NUMBER_CASES = {
    "infinite_learning_rate": (["--learning-rate", "inf"], "finite"),
    "nan_style_weight": (["--style-weight", "nan"], "finite"),
    "huge_seed": (["--init", "noise", "--seed", str(2**70)], "seed must be an integer"),
    "negative_epsilon": (["--epsilon", "-1"], "epsilon must be a finite number >= 0"),
    "beta_of_one": (["--beta1", "1"], "beta1 must be in [0, 1)"),
    "tiny_memory_limit": (["--memory-limit", "0.001"], "no image size fits"),
}


@pytest.mark.parametrize("case", sorted(NUMBER_CASES))
def test_bad_numbers_are_refused(files, case, capsys):
    extra, fragment = NUMBER_CASES[case]
    assert_refused(files, stylize_argv(files, *extra), fragment, capsys=capsys)


def test_a_huge_max_dim_is_refused_before_any_image_is_resized(files, capsys):
    """A 100000 px run is refused from the header alone (resizing the image first would need
    120 GB), and from arithmetic: what the process holds and its whole-image arrays exceed
    the memory, so none of the estimates' programs, seconds each at any size, is compiled
    (``run.tile_memory.check_whole_arrays_fit``)."""
    argv = stylize_argv(files, "--max-dim", "100000")
    with compiles_recorded() as compiled:
        err = assert_refused(files, argv, "content.png", "and the whole-image arrays",
                             "GiB available", capsys=capsys)  # fmt: skip
    assert compiled == []
    side = int(err.split("at most about --max-dim ")[1].split()[0])
    assert 1000 < side < 100000


def test_nan_pixels_are_an_input_fault(files, capsys):
    array = np.full((64, 96), 0.5, np.float32)
    array[3, 4] = np.nan
    Image.fromarray(array, "F").save(files / "nan.tif")
    argv = stylize_argv(files)
    argv[1] = str(files / "nan.tif")
    assert_refused(files, argv, "nan.tif", "non-finite", capsys=capsys)


def test_a_folder_given_as_weights_is_named_as_a_folder(files, capsys):
    argv = stylize_argv(files)
    argv[argv.index("--weights") + 1] = str(files / "out")
    assert_refused(files, argv, "out", "is a folder, not a weights file", capsys=capsys)


def test_missing_named_weights_do_not_fall_back(files, monkeypatch, capsys):
    monkeypatch.setenv("NST_JAX_WEIGHTS", str(files / "missing.h5"))
    argv = [a for a in stylize_argv(files) if a not in ("--weights", str(files / "w.h5"))]
    assert_refused(files, argv, "missing.h5", "$NST_JAX_WEIGHTS", capsys=capsys)


@pytest.mark.parametrize("option", ["--checkpoint-every", "--resume"])
def test_a_missing_content_is_named_with_watch_options(files, option, capsys):
    argv = stylize_argv(files, *([option, "5"] if option == "--checkpoint-every" else [option]))
    argv[1] = str(files / "gone.png")
    assert_refused(files, argv, "gone.png", "no such file", capsys=capsys)


def test_weights_convert_never_replaces_its_input(files, capsys):
    h5 = files / "w.h5"
    assert_refused(files, ["weights", "convert", h5, h5], "w.h5", "input", capsys=capsys)
    assert_refused(files, ["weights", "convert", h5, h5, "--force"], "input", capsys=capsys)
    (files / "out" / "c.msgpack").write_text("mine")
    assert_refused(files, ["weights", "convert", h5, files / "out" / "c.msgpack"], "exists",
                   capsys=capsys)  # fmt: skip


def test_stale_temporary_files_are_removed(files, capsys):
    """A run killed at the rename leaves ``.NAME.*.part``; the next run of that output removes
    it."""
    stale = files / "out" / ".r.png.abc123.part"
    stale.write_bytes(b"half an image")
    assert exit_code(stylize_argv(files)) == 0
    assert not stale.exists() and (files / "out" / "r.png").exists()


def test_a_full_disk_mid_run_is_one_line_and_leaves_nothing(files, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    before = snapshot(files)
    assert exit_code(stylize_argv(files)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "r.png" in err and "No space left" in err, err
    assert snapshot(files) == before


def test_ctrl_c_while_starting_is_one_line_and_130(files):
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_jax.cli.console", *stylize_argv(files)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Signal once NumPy's library is mapped: the handler is in place (it comes before any
    # import) and JAX is still loading. A fixed sleep hit Python's own start on a loaded box.
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    while "_multiarray_umath" not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip() == "nst-jax: interrupted", err


# --- --from: a stored record is untrusted data -----------------------------------------------


def write_record(path: Path, record) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(image.PROVENANCE_KEY, record if isinstance(record, str) else json.dumps(record))
    Image.new("RGB", (96, 64)).save(path, pnginfo=info)


@pytest.fixture
def stored(files, capsys):
    """A result of a real 2-step run, with its provenance."""
    assert exit_code(stylize_argv(files, out="out/first.png")) == 0
    capsys.readouterr()
    return image.read_provenance(files / "out" / "first.png")


FROM_CASES = {
    "not_json": ("this is not json", "not JSON"),
    "json_list": ("[1, 2]", "not a JSON object"),
    "unknown_key": ({"config": {}, "run": "rm -rf /"}, "unknown key(s) run"),
    # A missing field takes its default (a record older than the field); an unknown one is not.
    "settings_unknown": ({"config": {"steps": 3, "turbo": 1}}, "not StyleConfig's fields"),
    "plugin_not_given": ("plugin", "give --plugin with that same file"),
    "plugins_damaged": ("plugins", "plugins is not a list"),
    "bad_setting": ("steps", "invalid settings"),
    "bad_max_dim": ("max_dim", "--max-dim"),
    "bad_content": ("content", "content is not a file name"),
}


@pytest.mark.parametrize("case", sorted(FROM_CASES))
def test_damaged_provenance_is_one_line(files, stored, case, capsys):
    record, fragment = FROM_CASES[case]
    if record == "steps":
        record = {**stored, "config": {**stored["config"], "steps": "many"}}
    elif record == "max_dim":
        record = {**stored, "max_dim": -4}
    elif record == "content":
        record = {**stored, "content": 7}
    elif record == "plugin":
        record = {**stored, "plugins": [{"name": "own.py", "sha256": "a" * 64}]}
    elif record == "plugins":
        record = {**stored, "plugins": "import os"}
    write_record(files / "bad.png", record)
    argv = ["stylize", "--from", files / "bad.png", "-o", files / "out" / "again.png", *FAST]
    assert_refused(files, argv, "bad.png", fragment, capsys=capsys)
    code = exit_code(["info", str(files / "bad.png")])
    assert code in (0, 2) and "Traceback" not in capsys.readouterr().err


def test_from_needs_an_output(files, stored, capsys):
    argv = ["stylize", "--from", files / "out" / "first.png", "--weights", files / "w.h5"]
    assert_refused(files, argv, "-o", capsys=capsys)


def test_from_replays_settings_only(files, stored, capsys):
    """A record naming another subcommand, an output, weights and --from itself writes
    nothing outside -o, runs no command, and says what it did not replay."""
    evil = files / "evil"
    record = {
        **stored,
        "sha256": {"content": "0" * 64},  # an image saved at Ctrl-C carries its inputs' hashes
        "config": {**stored["config"], "steps": 3},
        "command": ["weights", "convert", str(files / "w.h5"), str(evil / "x.png"), "-o",
                    str(evil / "y.png"), "--weights", str(evil / "z.h5"), "--from",
                    str(files / "out" / "mine.png"), "--log", str(evil / "l.jsonl")],
    }  # fmt: skip
    write_record(files / "out" / "mine.png", record)
    out = files / "out" / "replayed.png"
    before = snapshot(files)
    argv = ["stylize", "--from", files / "out" / "mine.png", "-o", out,
            "--weights", files / "w.h5", "--tv-weight", "7", *FAST]  # fmt: skip
    assert exit_code([str(a) for a in argv]) == 0
    err = capsys.readouterr().err
    for ignored in ("'weights'", "-o", "--weights", "--from", "--log"):
        assert ignored in err
    after = snapshot(files)
    assert set(after) - set(before) == {"out/replayed.png"} and not evil.exists()
    assert all(after[k] == v for k, v in before.items())
    config = image.read_provenance(out)["config"]
    assert config["steps"] == 3 and config["tv_weight"] == 7.0  # stored, then overridden


# --- checkpoints ------------------------------------------------------------------------------


@pytest.fixture
def saved(files, capsys):
    """A 2-step run with a checkpoint at its end."""
    assert exit_code(stylize_argv(files, "--checkpoint-every", "2", out="out/c.png")) == 0
    capsys.readouterr()
    return files / "out" / "c.png.ckpt" / checkpoint.FILE


def damage(path: Path, change) -> None:
    payload = serialization.msgpack_restore(path.read_bytes())
    change(payload)
    path.write_bytes(serialization.msgpack_serialize(payload))


CHECKPOINT_CASES = {
    "missing_key": (lambda p: p.pop("losses"), "losses"),
    "wrong_leaf_count": (lambda p: p["opt_leaves"].pop(str(len(p["opt_leaves"]) - 1)), "optim"),
    "non_numeric_step": (lambda p: p.update(step="eight"), "step"),
    "negative_step": (lambda p: p.update(step=-3), "step"),
    "images_out_of_range": (lambda p: p.update(images=p["images"] * 5), "images"),
    "meta_not_json": (lambda p: p.update(meta="{"), "damaged"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_damaged_checkpoint_is_one_line(files, saved, case, capsys):
    change, fragment = CHECKPOINT_CASES[case]
    damage(saved, change)
    argv = stylize_argv(files, "--resume", "--steps", "4", out="out/c.png")
    assert_refused(files, argv, "c.png.ckpt", fragment, capsys=capsys)


def test_resume_refuses_a_replaced_input(files, saved, capsys):
    """The content replaced by another image of the same size: the checkpoint's SHA-256 of
    it no longer matches."""
    Image.open(files / "init.png").save(files / "content.png")
    argv = stylize_argv(files, "--resume", "--steps", "4", out="out/c.png")
    assert_refused(files, argv, "content", "changed", capsys=capsys)


def test_resume_refuses_fewer_steps_than_done(files, saved, capsys):
    damage(saved, lambda p: None)
    argv = stylize_argv(files, "--resume", "--steps", "1", out="out/c.png")
    assert_refused(files, argv, "step 2", "--steps", capsys=capsys)


def test_a_path_fault_of_a_long_run_is_reported_before_compiling(files):
    """A 1000-step 512 px run whose -o is its content: refused in a fresh process in well
    under 10 s (measured about 3 s: imports, the weights' path, no compilation)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "nst_jax.cli.console", "stylize", str(files / "content.png"),
         "--style", str(files / "style.png"), "-o", str(files / "content.png"),
         "--max-dim", "512", "--steps", "1000", "--weights", str(files / "w.h5")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert done.returncode == 2 and "inputs are never replaced" in done.stderr, done.stderr
    assert seconds < 10, seconds


def job_with_sheet(files: Path, sheet: Path, *extra) -> list[str]:
    """A two-result job (two style weights) whose results go to out/job."""
    return [*stylize_argv(files, "--style-weight", "1e-2,1e-1", "--sheet", str(sheet), *extra,
                          out="out/job")]  # fmt: skip


def test_a_jobs_sheet_never_replaces_a_file_it_did_not_write(files, capsys):
    """A job's --sheet at a user's file needs --force, as a single result's does; a sheet at
    one of the job's own results is refused even with --force (found by a hostile probe:
    both were replaced)."""
    mine = files / "out" / "mine.png"
    mine.write_bytes(b"the user's own file")
    assert_refused(files, job_with_sheet(files, mine), "mine.png", "exists", "--force",
                   capsys=capsys)  # fmt: skip
    result = files / "out" / "job" / "content_sw0.01.png"
    for extra in ([], ["--force"]):
        assert_refused(files, job_with_sheet(files, result, *extra), "content_sw0.01.png",
                       "one of the job's results", capsys=capsys)  # fmt: skip


@pytest.mark.parametrize("record", ["[1, 2]", '{"sheets": "x"}', "{", ""])
def test_a_tampered_sheet_record_grants_nothing(files, capsys, record):
    """The job's record of its sheets is untrusted: damaged, it names no sheet, so an existing
    file at the sheet's path still needs --force."""
    mine = files / "out" / "mine.png"
    mine.write_bytes(b"the user's own file")
    folder = files / "out" / "job" / ".nst-jax"
    folder.mkdir(parents=True)
    (folder / "sheets.json").write_text(record)
    assert_refused(files, job_with_sheet(files, mine), "mine.png", "exists", capsys=capsys)


def test_an_mp4_animation_needs_imageio_itself(monkeypatch):
    """``--animate x.mp4`` writes through imageio's writer, not only imageio-ffmpeg's binary:
    without imageio it is refused before the run (found by a hostile probe: the run ended in
    a ModuleNotFoundError after its work)."""
    import importlib.util

    from nst_jax.errors import InputError
    from nst_jax.session import watch

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "imageio" else real(n, *a)
    )
    with pytest.raises(InputError, match="--animate .mp4 needs imageio"):
        watch.check_extras(None, Path("a.mp4"), save_every=1)


@pytest.mark.parametrize(
    "extra",
    [["--size", "32x32"], ["--format", "jpg"], ["--batch-size", "2"], ["--shard", "1/2"],
     ["--retry-failed"], ["--styles-per-image", "1"], ["--fit", "pad"]],
)  # fmt: skip
def test_a_jobs_options_in_a_single_run_are_refused_not_dropped(files, capsys, extra):
    """Found by a hostile probe: a single result ignored --size (a 64x42 result for 32x32),
    --format and the rest; each is now one line naming it."""
    assert_refused(files, stylize_argv(files, *extra), extra[0], "one result", capsys=capsys)


@pytest.mark.parametrize("contents", [b"", b"\n\n", b"\x00\x01\x02 binary\n"])
def test_a_files_from_list_that_names_nothing_is_named(files, capsys, contents):
    """Found by a hostile probe: an empty list said 'no input files in nothing', a binary
    one named a NUL-holding line as if it were a file; both now name the list."""
    (files / "list.txt").write_bytes(contents)
    argv = stylize_argv(files, "--files-from", str(files / "list.txt"), out="out/job")
    del argv[1]  # no content but the list's
    assert_refused(files, argv, "list.txt", capsys=capsys)


def test_records_read_back_are_regular_files_of_a_bounded_size(tmp_path):
    """Every JSON record nst_jax reads back (json_record.read): a pipe in its place is
    refused at once (reading it would wait for a writer for ever), as are an oversized file,
    deep nesting and bytes that are not UTF-8; a video folder's record among them."""
    from nst_jax.errors import InputError
    from nst_jax.files import json_record
    from nst_jax.session import video
    from nst_jax.video.job import record_path

    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert json_record.read(good) == {"a": [1, 2]}
    with pytest.raises(ValueError, match="over 8 bytes"):
        json_record.read(good, max_bytes=8)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "latin.json").write_bytes(b'"\xe9"')
    for bad in ("deep.json", "latin.json"):
        with pytest.raises(ValueError):
            json_record.read(tmp_path / bad)
    frames = tmp_path / "frames"
    record_path(frames).parent.mkdir(parents=True)
    os.mkfifo(record_path(frames))
    with pytest.raises(ValueError, match="not a regular file"):
        json_record.read(record_path(frames))
    with pytest.raises(InputError, match="missing or damaged; cannot continue"):
        video.check_folder(frames, {}, resume=True, force=False)
    # A record folder that is a link would have the run write outside OUT, as a job's
    # (found by a hostile probe), --force or not.
    linked = tmp_path / "linked"
    linked.mkdir()
    record_path(linked).parent.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for resume, force in ((True, False), (False, True)):
        with pytest.raises(InputError, match="is a symbolic link; a video writes only into OUT"):
            video.check_folder(linked, {}, resume=resume, force=force)
