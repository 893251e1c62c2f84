"""Image loading in every common mode, resizing, and atomic saving."""

import errno

import numpy as np
import pytest
from PIL import Image

from nst_jax.errors import ImageError, OutputError
from nst_jax.files import image

RGB = np.array(
    [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [200, 100, 50], [0, 0, 0]]], np.uint8
)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff", ".webp"])
def test_lossless_formats_load_exactly(tmp_path, ext):
    path = tmp_path / f"x{ext}"
    options = {"lossless": True} if ext == ".webp" else {}
    Image.fromarray(RGB).save(path, **options)
    loaded = image.decode(path)
    assert loaded.dtype == np.float32 and loaded.shape == (2, 3, 3)
    np.testing.assert_allclose(loaded, RGB / 255.0, atol=1e-7)


def test_jpeg_loads_close(tmp_path):
    flat = np.full((16, 16, 3), (200, 120, 40), np.uint8)
    Image.fromarray(flat).save(tmp_path / "x.jpg", quality=100)
    np.testing.assert_allclose(image.decode(tmp_path / "x.jpg"), flat / 255.0, atol=3 / 255)


def test_grey_is_replicated(tmp_path):
    Image.fromarray(np.array([[0, 128, 255]], np.uint8), "L").save(tmp_path / "g.png")
    loaded = image.decode(tmp_path / "g.png")
    np.testing.assert_allclose(loaded[0, :, 0], [0, 128 / 255, 1])
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 2])


def test_sixteen_bit_grey_keeps_precision(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    loaded = image.decode(tmp_path / "g16.png")
    # 32768 / 65535 is not a multiple of 1/255: 8-bit conversion would lose it.
    np.testing.assert_allclose(loaded[0, :, 1], values[0] / 65535.0, rtol=1e-6)


def test_cmyk_is_converted(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "c.jpg", quality=100)
    loaded = image.decode(tmp_path / "c.jpg")
    np.testing.assert_allclose(loaded.mean(axis=(0, 1)), [1, 0, 0], atol=0.05)


def test_rgba_and_palette_transparency_composite_over_white(tmp_path):
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(image.decode(tmp_path / "a.png")[0], [[1, 0, 0], [1, 1, 1]])

    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=1)
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_allclose(image.decode(tmp_path / "p.png")[0], [[1, 0, 0], [1, 1, 1]])


def test_exif_orientation_is_applied(tmp_path):
    # Stored 3 wide, 2 high, with orientation 6 ("rotate 90 CW to display"): shown 2 x 3.
    # Blocks of 8 x 8 so JPEG's chroma subsampling leaves block centres intact.
    blocks = RGB.repeat(8, axis=0).repeat(8, axis=1)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(blocks).save(tmp_path / "r.jpg", exif=exif, quality=100)
    loaded = image.decode(tmp_path / "r.jpg")
    assert loaded.shape == (24, 16, 3)
    expected = np.rot90(RGB, k=-1) / 255.0  # clockwise
    np.testing.assert_allclose(loaded[4::8, 4::8], expected, atol=0.1)


@pytest.mark.parametrize(
    ("make", "fault"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, I am text\n"), "not an image"),
    ],
    ids=["missing", "empty", "text"],
)
def test_decode_errors_are_one_line(tmp_path, make, fault):
    path = tmp_path / "x.jpg"
    make(path)
    with pytest.raises(ImageError) as info:
        image.decode(path)
    assert str(info.value).startswith(f"{path}: ") and fault in str(info.value)


def test_truncated_png_is_refused(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        tmp_path / "full.png"
    )
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        image.decode(tmp_path / "cut.png")


def test_scaled_shape_truncates_like_the_tutorial():
    assert image.scaled_shape(600, 800, 512) == (384, 512)
    assert image.scaled_shape(100, 50, 512) == (512, 256)  # small images are scaled up
    assert image.scaled_shape(12, 2000, 48) == (0, 48)


def test_load_refuses_an_image_too_thin_to_scale(tmp_path):
    Image.new("RGB", (2000, 12)).save(tmp_path / "thin.png")
    with pytest.raises(ImageError, match="too thin"):
        image.load(tmp_path / "thin.png", max_dim=48)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".jpeg", ".webp"])
def test_save_round_trip_and_no_temporary_left(tmp_path, ext):
    # Smooth, so lossy formats keep it close: PNG exactly (to 8 bits); JPEG/WebP (4:2:0 chroma
    # on a 20 x 30 image) within 12/255 everywhere and 2/255 on average.
    y, x = np.mgrid[0:20, 0:30]
    data = np.stack([x / 30, y / 20, (x + y) / 50], -1).astype(np.float32)
    path = image.save(tmp_path / f"out{ext}", data)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    loaded = image.decode(path)
    tolerance = 0.5 / 255 + 1e-6 if ext == ".png" else 12 / 255
    np.testing.assert_allclose(loaded, data, atol=tolerance)
    assert np.mean(np.abs(loaded - data)) < 2 / 255


def test_saved_files_get_the_usual_permissions(tmp_path):
    # A temporary file is private (0600); the saved image must be readable like any other file.
    import os

    path = image.save(tmp_path / "out.png", np.zeros((4, 4, 3)))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_save_is_atomic_when_encoding_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OutputError, match="out.png: cannot write"):
        image.save(target, np.zeros((4, 4, 3)))
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_refusals(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ImageError, match="is a file, where the image needs a folder"):
        image.save(tmp_path / "file.txt" / "out.png", np.zeros((4, 4, 3)))
    with pytest.raises(ImageError, match="unknown output extension"):
        image.save(tmp_path / "out.gif", np.zeros((4, 4, 3)))
    with pytest.raises(ImageError, match="non-finite"):
        image.save(tmp_path / "nan.png", np.full((4, 4, 3), np.nan))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_check_writable_refuses_what_an_atomic_write_cannot_do_or_must_not_replace(tmp_path):
    # files.atomic.check_writable, each case one line (found by a hostile probe: "/" and ""
    # raised a bare StopIteration, a NUL byte passed, a pipe was replaced).
    import os

    from nst_jax.files import atomic

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_text("x")
    for path, words in (
        ("/", "is a folder"),
        ("", "is a folder"),
        (tmp_path / "pipe", "not a regular file"),
        (tmp_path / "file" / "out.png", "is a file, where"),
        (str(tmp_path / "a\0b.png"), "cannot be written (embedded null byte)"),
        (tmp_path / ("n" * 300 + ".png"), "cannot be written (File name too long)"),
        ("/proc/out.png", "cannot write in /proc"),
    ):
        with pytest.raises(OutputError, match=words.replace("(", r"\(").replace(")", r"\)")):
            atomic.check_writable(path, "the test")
    atomic.check_writable(tmp_path / "file", "the test")  # a file: the caller's rule
    atomic.check_writable(tmp_path / "new" / "deeper.png", "the test")
    with pytest.raises(TypeError, match="folder must be"):
        atomic.probe_folder(None, "x", "the test")
    # The write itself refuses too, for a library caller who checked nothing.
    with pytest.raises(OutputError, match="pipe: not a regular file"):
        atomic.atomic_write(tmp_path / "pipe", lambda tmp: tmp.write_bytes(b"x"))
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(OutputError, match="pipe.png: not a regular file"):
        image.save(tmp_path / "pipe.png", np.zeros((4, 4, 3)), replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "pipe", "pipe.png"]
