"""The nst-jax command: a real run, and every kind of bad input (exit 2, one line, nothing
left on disk)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nst_jax.cli import main as cli
from nst_jax.cli import options
from nst_jax.files import image

from conftest import FAST, exit_code


def run(files, *args, weights=None):
    argv = ["stylize", *args, *FAST]
    if weights:
        argv += ["--weights", weights]
    return cli.main(argv)


@pytest.mark.slow
def test_stylize_writes_the_image_and_reports(files, weights_h5, capsys):
    out = files / "out" / "result.png"
    code = run(files, str(files / "content.png"), "--style", str(files / "style.png"),
               "-o", str(out), "--steps", "12", "-q", weights=weights_h5)  # fmt: skip
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "12 steps" in last and "steps/s" in last and str(out) in last
    result = image.decode(out)
    assert result.shape == (64, 96, 3)
    assert [p.name for p in (files / "out").iterdir()] == ["result.png"]


@pytest.mark.parametrize("ext", [".jpg", ".webp"])
def test_other_output_formats(files, weights_h5, ext, capsys):
    out = files / "out" / f"result{ext}"
    assert run(files, str(files / "content.png"), "--style", str(files / "style.png"),
               "-o", str(out), "--steps", "1", "-q", weights=weights_h5) == 0  # fmt: skip
    assert image.decode(out).shape == (64, 96, 3)


def make_mode(kind, path):
    """Write a 96 x 64 (W x H) image of one awkward kind; EXIF-rotated stores it as 64 x 96."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (64, 96, 3), np.uint8)
    if kind == "cmyk":
        Image.fromarray(rgb).convert("CMYK").save(path.with_suffix(".jpg"))
        return path.with_suffix(".jpg")
    if kind == "16bit":
        Image.fromarray(rng.integers(0, 65535, (64, 96), np.uint16)).save(path)
    elif kind == "palette_alpha":
        Image.fromarray(rgb).quantize(16).save(path, transparency=3)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA").save(path)
    elif kind == "grey":
        Image.fromarray(rgb[..., 0], "L").save(path)
    elif kind == "exif_rotated":
        exif = Image.Exif()
        exif[0x0112] = 8  # rotate 90 CCW to display: stored 64 wide x 96 high
        Image.fromarray(np.rot90(rgb, k=-1).copy()).save(path.with_suffix(".jpg"), exif=exif)
        return path.with_suffix(".jpg")
    return path


@pytest.mark.parametrize("kind", ["cmyk", "16bit", "palette_alpha", "rgba", "grey", "exif_rotated"])
def test_awkward_inputs_work(files, weights_h5, kind, capsys):
    content = make_mode(kind, files / f"{kind}.png")
    out = files / "out" / "r.png"
    assert run(files, str(content), "--style", str(content), "-o", str(out), "--steps", "1",
               "-q", weights=weights_h5) == 0  # fmt: skip
    assert image.decode(out).shape == (64, 96, 3)  # EXIF rotation applied: 96 wide


def bad_cases(files, weights_h5):
    """(argv, fragment of the one-line message) for each kind of bad input."""
    c, s, out = str(files / "content.png"), str(files / "style.png"), str(files / "out" / "r.png")
    (files / "text.jpg").write_text("not an image\n")
    (files / "empty.png").write_bytes(b"")
    data = (files / "content.png").read_bytes()
    (files / "cut.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (2000, 12)).save(files / "thin.png")
    Image.new("RGB", (2000, 400)).save(files / "narrow.png")
    (files / "regular").write_text("x")
    (files / "broken.h5").write_text("not hdf5")
    w = ["--weights", weights_h5]
    return {
        "missing_content": ([files / "nope.jpg", "--style", s, "-o", out, *w], "no such file"),
        "missing_style": ([c, "--style", files / "nope.png", "-o", out, *w], "no such file"),
        "text_as_jpg": ([files / "text.jpg", "--style", s, "-o", out, *w], "not an image"),
        "truncated_png": ([files / "cut.png", "--style", s, "-o", out, *w], "truncated"),
        "empty_file": ([c, "--style", files / "empty.png", "-o", out, *w], "empty file"),
        "too_thin": (
            [files / "thin.png", "--style", s, "-o", out, *w, "--max-dim", "48"],
            "too thin",
        ),  # fmt: skip
        "too_small_for_layers": (
            [files / "narrow.png", "--style", s, "-o", out, *w, "--max-dim", "48"],
            "need both sides >= 16",
        ),
        "output_under_file": (
            [c, "--style", s, "-o", files / "regular" / "r.png", *w],
            "is a file",
        ),  # fmt: skip
        "unknown_extension": (
            [c, "--style", s, "-o", files / "out" / "r.gif", *w],
            "unknown output extension",
        ),  # fmt: skip
        "missing_weights": ([c, "--style", s, "-o", out], "weights not found"),
        "broken_weights": (
            [c, "--style", s, "-o", out, "--weights", files / "broken.h5"],
            "not an HDF5 file",
        ),  # fmt: skip
        "negative_steps": (
            [c, "--style", s, "-o", out, *w, "--steps", "-3"],
            "expected a positive integer",
        ),  # fmt: skip
        "negative_weight": (
            [c, "--style", s, "-o", out, *w, "--style-weight", "-1"],
            "expected a number >= 0",
        ),  # fmt: skip
        "unknown_layer": (
            [c, "--style", s, "-o", out, *w, "--style-layers", "block1_conv1,block9_conv1"],
            "--style-layers: unknown vgg19 layer(s) block9_conv1",
        ),
        "negative_layer_weight": (
            [c, "--style", s, "-o", out, *w, "--content-layer-weights", "-2"],
            "expected a number >= 0",
        ),
        "blend_count": (
            [c, "--style", s, "--style", s, "-o", out, *w, "--style-blend", "0.7,0.2,0.1"],
            "--style-blend has 3 weights for 2 --style images",
        ),
        "negative_blend": (
            [c, "--style", s, "--style", s, "-o", out, *w, "--style-blend", "1,-1"],
            "expected a number >= 0",
        ),
        "zero_blend": (
            [c, "--style", s, "--style", s, "-o", out, *w, "--style-blend", "0,0"],
            "--style-blend needs at least one weight > 0",
        ),
        "missing_init": (
            [c, "--style", s, "-o", out, *w, "--init", files / "nope.png"],
            "no such file",
        ),
        "zero_style_scale": (
            [c, "--style", s, "-o", out, *w, "--style-scale", "0"],
            "expected a number > 0",
        ),
        "unknown_optimizer": (
            [c, "--style", s, "-o", out, *w, "--optimizer", "sgd"],
            "invalid choice: 'sgd'",
        ),
        "unknown_preset": (
            [c, "--style", s, "-o", out, *w, "--preset", "fast"],
            "invalid choice: 'fast'",
        ),
    }


CASES = [
    "missing_content", "missing_style", "text_as_jpg", "truncated_png", "empty_file",
    "too_thin", "too_small_for_layers", "output_under_file", "unknown_extension",
    "missing_weights", "broken_weights", "negative_steps", "negative_weight",
    "unknown_layer", "negative_layer_weight", "blend_count", "negative_blend", "zero_blend",
    "missing_init", "zero_style_scale", "unknown_optimizer", "unknown_preset",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_no_files(files, weights_h5, case, capsys):
    argv, fragment = bad_cases(files, weights_h5)[case]
    before = sorted(p.relative_to(files) for p in files.rglob("*"))
    # --steps 2: should a case wrongly pass validation, it fails fast instead of running 1000.
    assert exit_code(["stylize", *map(str, argv), "--steps-per-call", "10", "--steps", "2"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err
    assert sorted(p.relative_to(files) for p in files.rglob("*")) == before


def test_bad_input_in_a_real_process_has_no_traceback(files, weights_h5):
    # In-process tests cannot see what the interpreter itself would print; one real process.
    result = subprocess.run(
        [sys.executable, "-m", "nst_jax.cli", "stylize", str(files / "nope.jpg"),
         "--style", str(files / "style.png"), "-o", str(files / "out" / "r.png"),
         "--weights", weights_h5],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no such file" in result.stderr
    assert not list((files / "out").iterdir())


def test_help_lists_options_with_defaults(capsys):
    """Every stylize option is in --help with its default."""
    assert exit_code(["stylize", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    stylize = cli.build_parser()._subparsers._group_actions[0].choices["stylize"]
    formatter = stylize._get_formatter()
    for action in stylize._actions:
        if not action.option_strings or action.nargs == 0:  # positional, or a flag
            continue
        assert next(o for o in action.option_strings if o.startswith("--")) in text
        assert "(default: " in formatter._get_help_string(action), action.option_strings
    for default in ("default: 1000", "default: 0.02", "default: adam", "default: content",
                    "default: block5_conv2", "default: none", "default: tutorial"):  # fmt: skip
        assert default in text, default
    assert "default: None" not in text


def write_folder(folder):
    """Five images of three sizes and one corrupt file, as a folder of photos would have."""
    folder.mkdir()
    rng = np.random.default_rng(4)
    sizes = {"a": (32, 24), "b": (32, 24), "c": (24, 32), "d": (32, 32), "e": (24, 32)}
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / f"{name}.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return sizes


@pytest.mark.slow
def test_folder_with_a_corrupt_file(tmp_path, files, weights_h5, capsys):
    sizes = write_folder(tmp_path / "photos")
    out = tmp_path / "results"
    code = exit_code(["stylize", str(tmp_path / "photos"), "--style", str(files / "style.png"),
                      "-o", str(out), "--max-dim", "32", "--steps", "2", "-q",
                      "--batch-size", "2", "--weights", weights_h5])  # fmt: skip
    assert code == 3  # finished, but an input failed: the corrupt file
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt.jpg" in err
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert written == [f"{n}.png" for n in sorted(sizes)]
    for name, (w, h) in sizes.items():
        assert image.decode(out / f"{name}.png").shape == (h, w, 3)


@pytest.mark.slow
def test_sweep_and_styles_with_sheet(tmp_path, files, content_image, weights_h5, capsys):
    out, sheet = tmp_path / "sweep", tmp_path / "sheet.png"
    Image.fromarray(image.to_uint8(content_image[::2, ::2])).save(tmp_path / "small.png")
    code = exit_code(["stylize", str(tmp_path / "small.png"), "--style", str(files / "style.png"),
                      "--style", str(files / "content.png"), "--style-weight", "1e-3,1e-2,1e-1",
                      "-o", str(out), "--max-dim", "48", "--steps", "2", "-q",
                      "--sheet", str(sheet), "--weights", weights_h5])  # fmt: skip
    assert code == 0
    # Besides the results, only the job's manifest folder (what a rerun continues from).
    names = sorted(p.name for p in out.iterdir() if p.name != ".nst-jax")
    assert names == sorted(
        f"small_{style}_sw{w}.png"
        for style in ("style", "content")
        for w in ("0.001", "0.01", "0.1")
    )
    # The sheet: one row per content, a column per style x setting, each tile 192 + label 16.
    assert image.decode(sheet).shape == (192 + 16, 6 * 192, 3)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "6 done, 0 failed" in last
    # Rerun, the job continues (all done): its own sheet is redrawn without --force.
    sheet.write_bytes(b"")
    code = exit_code(["stylize", str(tmp_path / "small.png"), "--style", str(files / "style.png"),
                      "--style", str(files / "content.png"), "--style-weight", "1e-3,1e-2,1e-1",
                      "-o", str(out), "--max-dim", "48", "--steps", "2", "-q",
                      "--sheet", str(sheet), "--weights", weights_h5])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert image.decode(sheet).shape == (192 + 16, 6 * 192, 3)


def test_several_results_need_a_folder(files, weights_h5, capsys):
    code = exit_code(["stylize", str(files / "content.png"), "--style", str(files / "style.png"),
                      "--tv-weight", "1,2", "-o", str(files / "out" / "r.png"), "--steps", "2",
                      "--weights", weights_h5])  # fmt: skip
    assert code == 2
    assert "2 results need an output folder" in capsys.readouterr().err
    assert not list((files / "out").iterdir())


def test_shards_split_the_items(tmp_path, files):
    """Every item belongs to exactly one of 3 shards (10 items: 5 good images x 2 settings,
    the corrupt file's 2 are failures each shard reports its share of)."""
    from nst_jax import StyleConfig, dataset

    write_folder(tmp_path / "photos")
    config = StyleConfig(style_weight=(1.0, 2.0))
    settings = dataset.JobSettings(max_dim=32)
    plan = dataset.plan_job([str(tmp_path / "photos")], [str(files / "style.png")],
                            str(tmp_path / "out"), config, settings)  # fmt: skip
    assert len(plan.items) == 12 and len([it for it in plan.items if it.batch < 0]) == 2
    shards = [[i for b in plan.shard(k, 3) for i in b.items] for k in range(3)]
    assert sorted(sum(shards, [])) == sorted(it.index for it in plan.items if it.batch >= 0)
    # Batches hold images of one program shape, at most batch_size of them.
    for batch in plan.batches:
        assert len(batch.items) <= settings.batch_size


@pytest.mark.parametrize(
    "extra",
    [
        ["--preset", "gatys", "--steps", "2", "--steps-per-call", "2"],
        ["--preserve-color", "luminance", "--scales", "2", "--coarse-steps", "2", "--steps", "2"],
        [
            "--init",
            "style",
            "--style-layers",
            "block1_conv1,block2_conv1",
            "--style-layer-weights",
            "2,1",
            "--steps",
            "2",
        ],
    ],
    ids=["gatys", "luminance_scales", "layers_init"],
)
@pytest.mark.slow
def test_algorithm_options_run(files, weights_h5, extra, capsys):
    out = files / "out" / "r.png"
    argv = [str(files / "content.png"), "--style", str(files / "style.png"), "-o", str(out)]
    assert run(files, *argv, "-q", *extra, weights=weights_h5) == 0
    assert image.decode(out).shape == (64, 96, 3)
    config = image.read_provenance(out)["config"]
    assert config["steps"] == 2


@pytest.mark.slow
def test_blend_writes_one_result_and_init_from_a_file(files, weights_h5, capsys):
    flipped = files / "flipped.png"
    Image.open(files / "style.png").transpose(Image.FLIP_TOP_BOTTOM).save(flipped)
    out = files / "out"
    argv = [str(files / "content.png"), "--style", str(files / "style.png"), "--style",
            str(flipped), "--style-blend", "0.7,0.3", "-o", str(out), "--init",
            str(files / "style.png"), "--steps", "2", "-q"]  # fmt: skip
    assert run(files, *argv, weights=weights_h5) == 0
    assert sorted(p.name for p in out.iterdir()) == [".nst-jax", "content.png"]  # a job's manifest
    config = image.read_provenance(out / "content.png")["config"]
    assert config["style_blend"] == [0.7, 0.3]


# The per-style fields are set by the options that follow each --style.
PER_STYLE_OPTIONS = {"style_weights": "--per-style-weight", "style_scales": "--style-scale"}


def test_help_lists_an_option_for_every_config_field(capsys):
    """Every StyleConfig field can be set from the command line (options are generated)."""
    import dataclasses

    from nst_jax import StyleConfig

    with pytest.raises(SystemExit):
        cli.main(["stylize", "--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(StyleConfig):
        option = PER_STYLE_OPTIONS.get(field.name, f"--{field.name.replace('_', '-')}")
        assert f"{option} " in text, field.name


def test_every_field_round_trips_through_the_parser():
    """A non-default value of each field, given as an option, lands in the config."""

    argv = ["stylize", "c.png", "--beta1", "0.9", "--beta2", "0.99", "--epsilon", "1e-7",
            "--loop", "device", "--remat", "--content-layer-weights", "2",
            "--learning-rate", "0.01,0.03", "--normalize-gradients", "--average", "0.5",
            "--style", "a.png", "--style-scale", "0.5", "--style", "b.png",
            "--per-style-weight", "2"]  # fmt: skip
    config = options.config_from_args(cli.build_parser().parse_args(argv))
    assert config.normalize_gradients is True and config.average == 0.5
    assert config.style_scales == (0.5, None) and config.style_weights == (1.0, 2.0)
    assert (config.beta1, config.beta2, config.epsilon) == (0.9, 0.99, 1e-7)
    assert config.loop == "device" and config.remat is True
    assert config.content_layer_weights == (2.0,) and config.learning_rate == (0.01, 0.03)
