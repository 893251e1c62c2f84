"""The inputs' pixel limit (``max_pixels``, ``--max-pixels``) in every command that reads
images: stylize, score, video and train take it, refuse (or, for training images, pass over)
what is larger, and the message names the option of the command that printed it.

The boundaries are exact: an image of W x H pixels passes at ``max_pixels = W * H`` and is
refused at ``W * H - 1``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin

import nst_jax
from nst_jax import session
from nst_jax.cli.main import build_parser
from nst_jax.errors import ImageError, InputError
from nst_jax.feedforward import data, train
from nst_jax.files import image
from nst_jax.session import inputs, outputs, score
from nst_jax.video import frames

from conftest import LIGHT, assert_refused, exit_code

BAD_LIMITS = [0, -1, 1.5, True, "100", float("nan")]


def save_noise(path: Path, height: int, width: int, seed: int = 0) -> Path:
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("bad", BAD_LIMITS)
def test_a_bad_limit_names_max_pixels(bad, tmp_path):
    with pytest.raises(InputError, match="max_pixels must be a positive whole number"):
        image.check_max_pixels(bad)
    with pytest.raises(InputError, match="max_pixels"):
        image.decode(save_noise(tmp_path / "a.png", 4, 4), max_pixels=bad)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def test_a_forged_png_header_is_refused_without_decoding(tmp_path, monkeypatch):
    """Found by a hostile probe: reading a PNG's EXIF orientation (Pillow's
    PngImageFile.getexif) decoded the whole image, so a 74-byte file claiming 2^31 x 2^31
    pixels ended every command in MemoryError before its size was compared (the command
    lifts Pillow's own limit, as this test does)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    side = 2**31 - 1
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    forged = tmp_path / "forged.png"
    pixels = png_chunk(b"IDAT", zlib.compress(b"\0" * 10))
    forged.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + pixels
                       + png_chunk(b"IEND", b""))  # fmt: skip
    assert image.probe_size(forged) == (side, side)
    with pytest.raises(InputError, match=f"{side}x{side} px is over the limit"):
        image.decode(forged)


def test_sizes_are_read_from_headers_with_png_exif_before_the_pixels(tmp_path, monkeypatch):
    """probe_size never decodes; a PNG's eXIf orientation (before its pixels) turns the
    probed size and the decoded image alike."""
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees: shown 30 wide, 40 high
    turned = tmp_path / "turned.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(turned, exif=exif.tobytes())
    jpeg = tmp_path / "turned.jpg"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(jpeg, exif=exif.tobytes())
    assert image.decode(turned).shape == image.decode(jpeg).shape == (40, 30, 3)

    def no_decoding(self, *args):
        raise AssertionError("probe_size decoded the pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding, raising=False)
    assert image.probe_size(turned) == image.probe_size(jpeg) == (40, 30)
    assert image.probe_size(save_noise(tmp_path / "plain.png", 30, 40)) == (30, 40)


def test_one_rule_says_what_is_over_the_limit():
    """Every reader's refusal comes from image.over_pixel_limit: W x H pixels pass at a limit
    of W * H, fail at W * H - 1, and ``None`` is no limit."""
    assert image.over_pixel_limit(40, 30, 1200) is None
    assert image.over_pixel_limit(40, 30, None) is None
    assert image.over_pixel_limit(40, 30, 1199) == (
        "40x30 px is over the limit of 1199 pixels (max_pixels raises it)"
    )
    assert image.over_pixel_limit(400, 300, 1200, " at max_dim=400").startswith(
        "400x300 px at max_dim=400 is over"
    )
    for bad in BAD_LIMITS:
        with pytest.raises(InputError, match="max_pixels"):
            image.over_pixel_limit(40, 30, bad)


def test_a_style_scaled_past_the_limit_is_refused_from_its_header(tmp_path):
    style = save_noise(tmp_path / "s.png", 30, 40)
    config = nst_jax.StyleConfig()
    assert inputs.planned_styles([style], config, 400, 120_000)[0][1:] == (300, 400)
    with pytest.raises(InputError, match=r"s.png: 400x300 px as loaded "
                       r"is over the limit of 119999 pixels"):  # fmt: skip
        inputs.planned_styles([style], config, 400, 119_999)
    with pytest.raises(InputError, match=r"s.png: 40x30 px is over the limit of 1199 pixels"):
        inputs.planned_styles([style], config, None, 1199)


@pytest.mark.slow
def test_a_folder_job_fails_the_contents_over_the_limit(tmp_path, weights_h5, capsys):
    """A job's contents are loaded under --max-pixels (each one over it fails its item, in
    the command's words), and --max-pixels off lifts it."""
    save_noise(tmp_path / "tree" / "a.png", 20, 20)
    save_noise(tmp_path / "tree" / "b.png", 30, 40)
    style = save_noise(tmp_path / "style.png", 20, 20)
    argv = ["stylize", tmp_path / "tree", "--style", style, "--weights", weights_h5,
            "--max-dim", "32", "--steps", "1", "-q", "--compile-cache", "off", *LIGHT]  # fmt: skip
    assert exit_code([*argv, "-o", tmp_path / "out", "--max-pixels", "1199"]) == 3
    err = capsys.readouterr().err
    assert "b.png: 40x30 px is over the limit of 1199 pixels (--max-pixels raises it)" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png"]
    assert exit_code([*argv, "-o", tmp_path / "all", "--max-pixels", "off"]) == 0
    assert sorted(p.name for p in (tmp_path / "all").glob("*.png")) == ["a.png", "b.png"]


def test_a_sheet_reads_the_results_under_the_run_s_limit(tmp_path):
    """--sheet reads the results back under the run's --max-pixels, as every other file."""
    result = save_noise(tmp_path / "r.png", 30, 40)
    with pytest.raises(ImageError, match="40x30 px is over the limit of 1199 pixels"):
        outputs.write_sheet(tmp_path / "sheet.png", [result], 1, max_pixels=1199)
    assert not (tmp_path / "sheet.png").exists()
    outputs.write_sheet(tmp_path / "sheet.png", [result], 1, max_pixels=None)
    assert image.probe_size(tmp_path / "sheet.png") == (192 + 16, 192)


def test_limits_are_whole_numbers_or_none(tmp_path):
    for good in (None, 1, np.int64(7), 10**12):
        assert image.check_max_pixels(good) is good
    path = save_noise(tmp_path / "a.png", 30, 40)
    assert image.decode(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(InputError, match=r"40x30 px is over the limit of 1199 pixels"):
        image.decode(path, max_pixels=1199)


@pytest.mark.parametrize("command", ["stylize", "score", "video", "train"])
def test_every_command_that_reads_images_takes_max_pixels(command):
    """Each command's refusal says "--max-pixels raises it": the option must be its own."""
    args = {
        "stylize": ["stylize", "c.png", "--style", "s.png", "-o", "o.png"],
        "score": ["score", "c", "s", "r"],
        "video": ["video", "clip", "--style", "s.png", "-o", "out"],
        "train": ["train", "--method", "johnson", "--data", "d", "-o", "m"],
    }[command]
    assert build_parser().parse_args([*args, "--max-pixels", "1234"]).max_pixels == 1234
    assert build_parser().parse_args(args).max_pixels == image.MAX_PIXELS
    assert build_parser().parse_args([*args, "--max-pixels", "off"]).max_pixels is None


def test_score_refuses_an_image_over_the_limit(tmp_path, weights_h5, params, capsys):
    for kind in ("contents", "styles", "results"):
        save_noise(tmp_path / kind / "00.png", 30, 40)
    folders = [tmp_path / k for k in ("contents", "styles", "results")]
    argv = ["score", *folders, "--weights", weights_h5, "-o", tmp_path / "s.csv", "-q",
            "--max-dim", "32"]  # fmt: skip
    assert_refused(tmp_path, [*argv, "--max-pixels", "1199"], "00.png", "40x30 px",
                   "(--max-pixels raises it)", capsys=capsys)  # fmt: skip
    # Scaled up by --max-dim past the limit: refused from the header, before decoding.
    up = [*argv[:-1], "400", "--max-pixels", "1200"]
    assert_refused(tmp_path, up, "400x300 px at --max-dim 400", "--max-pixels", capsys=capsys)
    for bad in BAD_LIMITS:
        with pytest.raises(InputError, match="max_pixels"):
            score.score_folders(params, *folders, max_dim=32, max_pixels=bad)
        request = score.ScoreRequest(*map(str, folders), str(tmp_path / "t.csv"),
                                     weights=weights_h5, max_pixels=bad)  # fmt: skip
        with pytest.raises(InputError, match="max_pixels"):
            score.run_score(request)
    assert not (tmp_path / "t.csv").exists()


def test_score_checks_every_file_before_the_first_score(tmp_path, params):
    """Found by a hostile probe: the second pair's image over the limit was refused after
    the first pair was scored, and that work was lost."""
    for kind in ("contents", "styles", "results"):
        save_noise(tmp_path / kind / "00.png", 20, 20)
        save_noise(tmp_path / kind / "01.png", 30, 40)
    folders = [tmp_path / k for k in ("contents", "styles", "results")]
    reports = []
    with pytest.raises(InputError, match=r"contents/01.png: 40x30 px is over the limit of 400"):
        score.score_folders(params, *folders, max_dim=None, max_pixels=400,
                            report=lambda *done: reports.append(done))  # fmt: skip
    assert reports == []


def test_video_frames_over_the_limit_are_refused_before_any_work(tmp_path, weights_h5, capsys):
    clip = tmp_path / "clip"
    for index in range(3):
        save_noise(clip / f"frame{index}.png", 30, 40, seed=index)
    style = save_noise(tmp_path / "style.png", 20, 20)
    argv = ["video", clip, "--style", style, "-o", tmp_path / "out", "--weights", weights_h5,
            "--max-dim", "32", "--steps", "1", "-q"]  # fmt: skip
    assert_refused(tmp_path, [*argv, "--max-pixels", "1199"], "clip", "40x30 px per frame",
                   "(--max-pixels raises it)", capsys=capsys)  # fmt: skip
    # A copy from macOS leaves ._NAME files of metadata beside each frame: hidden, not frames.
    (clip / "._frame0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    probed = frames.probe(clip)
    assert probed.count == 3
    frames.check_frame_size(probed, 1200)  # exactly the frames' pixels: accepted
    frames.check_frame_size(probed, None)
    assert next(frames.read(probed, 32, 0, 1200)).shape == (24, 32, 3)
    with pytest.raises(InputError, match="frame0.png: 40x30 px is over the limit of 1199"):
        next(frames.read(probed, 32, 0, 1199))  # a frame file swapped for a larger one
    for bad in BAD_LIMITS:
        with pytest.raises(InputError, match="max_pixels"):
            frames.read(probed, 32, 0, bad)  # at the call, not at the first frame
        request = session.VideoRequest(str(clip), (str(style),), str(tmp_path / "o2"),
                                       weights=weights_h5, max_pixels=bad)  # fmt: skip
        with pytest.raises(InputError, match="max_pixels"):
            session.run_video(request)
    assert not (tmp_path / "out").exists() and not (tmp_path / "o2").exists()


def test_training_images_over_the_limit_are_passed_over_with_the_reason(tmp_path):
    small = save_noise(tmp_path / "data" / "a.png", 20, 20)
    large = save_noise(tmp_path / "data" / "b.png", 30, 40)
    found = data.image_files(tmp_path / "data", "--data", max_pixels=1199)
    assert found.files == [small]
    assert found.passed == [(large, "40x30 px is over the limit of 1199 pixels (max_pixels "
                                    "raises it)")]  # fmt: skip
    assert data.image_files(tmp_path / "data", "--data", 1200).files == [small, large]
    with pytest.raises(InputError, match="no readable images"):
        data.image_files(tmp_path / "data", "--data", max_pixels=399)
    with pytest.raises(InputError, match="max_pixels"):
        data.image_files(tmp_path / "data", "--data", max_pixels=0)
    # A file that grew past the limit after the listing is replaced as an unreadable one.
    unreadable: set = set()
    crop = lambda path: data.load_crop(path, 16, 0, 0, 0, 0, max_pixels=1199)  # noqa: E731
    assert data.load_or_next([large, small], 0, crop, unreadable).shape == (16, 16, 3)
    assert unreadable == {large}
    settings = train.TrainSettings(method="johnson", steps=1, batch_size=1, size=16)
    batches = train.step_batches(settings, [large], None, 0, max_pixels=1199)
    with pytest.raises(InputError, match="no training image can be decoded"):
        next(batches)
    for bad in BAD_LIMITS:  # at the call, not at the first batch
        with pytest.raises(InputError, match="max_pixels"):
            data.batches([small], 1, 16, 0, range(1), max_pixels=bad)
        with pytest.raises(InputError, match="max_pixels"):
            train.step_batches(settings, [small], None, 0, max_pixels=bad)


def test_a_folder_with_every_image_over_the_limit_says_so(tmp_path):
    """Found by a hostile probe: it said only 'no readable images'."""
    save_noise(tmp_path / "data" / "a.png", 30, 40)
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match=r"no readable images for --data \(2 passed over; "
                       r".*a.png: 40x30 px is over the limit of 1199 pixels"):  # fmt: skip
        data.image_files(tmp_path / "data", "--data", 1199)
    assert inputs.passed_note([(Path("a.png"), "why")]) == "1 file passed over (a.png: why)"
    three = [(Path(f"{k}.png"), "why") for k in range(3)]
    assert inputs.passed_note(three, ", not inputs") == (
        "3 files passed over, not inputs (0.png: why and 2 more)"
    )


def test_a_training_style_over_the_limit_is_refused(tmp_path, weights_h5, capsys):
    save_noise(tmp_path / "data" / "a.png", 20, 20)
    style = save_noise(tmp_path / "style.png", 30, 40)
    argv = ["train", "--method", "johnson", "--style", style, "--data", tmp_path / "data",
            "-o", tmp_path / "m", "--steps", "1", "--weights", weights_h5, "-q"]  # fmt: skip
    assert_refused(tmp_path, [*argv, "--max-pixels", "1199"], "style.png", "40x30 px",
                   "(--max-pixels raises it)", capsys=capsys)  # fmt: skip
    settings = train.TrainSettings(method="johnson", steps=1)
    for bad in BAD_LIMITS:
        request = session.TrainRequest(settings, str(tmp_path / "data"), str(tmp_path / "m"),
                                       style=str(style), max_pixels=bad)  # fmt: skip
        with pytest.raises(InputError, match="max_pixels"):
            session.run_training(request)
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_a_training_run_notes_the_images_it_passed_over(tmp_path, weights_h5, capsys):
    for k in range(2):
        save_noise(tmp_path / "data" / f"a{k}.png", 20, 20, seed=k)
    save_noise(tmp_path / "data" / "big.png", 30, 40)
    style = save_noise(tmp_path / "style.png", 20, 20, seed=9)
    argv = ["train", "--method", "johnson", "--style", style, "--data", tmp_path / "data",
            "-o", tmp_path / "m", "--steps", "1", "--batch-size", "1", "--size", "16",
            "--width", "4", "--residual-blocks", "1", "--content-layers", "block1_conv2",
            "--style-layers", "block1_conv1", "--weights", weights_h5, "-q",
            "--max-pixels", "1199"]  # fmt: skip
    assert exit_code(argv) == 0
    err = capsys.readouterr().err
    assert "1 file passed over" in err and "big.png: 40x30 px" in err, err
    assert "(--max-pixels raises it)" in err, err


def test_a_stylize_request_with_a_bad_limit_is_refused(files):
    for bad in BAD_LIMITS:
        request = session.StylizeRequest(
            contents=(str(files / "content.png"),), styles=(str(files / "style.png"),),
            output=str(files / "out" / "r.png"), weights=str(files / "w.h5"), max_pixels=bad,
        )  # fmt: skip
        with pytest.raises(InputError, match="max_pixels"):
            session.run_single(request)
    assert not (files / "out" / "r.png").exists()
