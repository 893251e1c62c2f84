"""Image files <-> float32 RGB arrays in [0, 1]: decode, orient, convert, resize, save."""

from __future__ import annotations

import errno
import json
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from nst_jax.errors import ImageError, InputError, shown
from nst_jax.files.atomic import atomic_write, nearest_existing_parent

# Output format by extension (Pillow format name).
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def _to_rgb_array(img: Image.Image, background: float = 1.0) -> np.ndarray:
    """Any Pillow mode -> ``(H, W, 3)`` float32 in [0, 1].

    Transparent pixels are composited over ``background``: their stored colour is arbitrary
    (often black). White (1) is what a viewer shows behind a picture; a mask's transparent
    pixels are outside it, black (0).
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) greyscale: keep the precision 8-bit conversion would lose.
        grey = np.asarray(img, dtype=np.float32)
        scale = 65535.0 if img.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(grey / scale, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "F":
        return np.repeat(np.clip(np.asarray(img, np.float32), 0, 1)[..., None], 3, axis=-1)
    if img.mode == "P" and "transparency" in img.info or img.mode in ("LA", "PA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        return rgba[..., :3] * alpha + background * (1.0 - alpha)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


# Pillow's own default limit (about 89.5 megapixels, a 0.25 GB RGB image in 8 bits).
MAX_PIXELS = 89_478_485
# The longest side images are loaded at: the tutorial's 512 px.
DEFAULT_MAX_DIM = 512


def check_max_pixels(max_pixels: object) -> int | None:
    """``max_pixels`` itself when it is a pixel limit: a positive whole number, or ``None``
    (no limit).

    Raises:
      InputError: anything else, naming ``max_pixels``.
    """
    is_whole = isinstance(max_pixels, (int, np.integer)) and not isinstance(max_pixels, bool)
    if max_pixels is None or (is_whole and max_pixels >= 1):
        return max_pixels
    raise InputError(f"max_pixels must be a positive whole number or None, got {max_pixels!r}")


def over_pixel_limit(width: int, height: int, max_pixels: int | None, at: str = "") -> str | None:
    """Why a ``width`` x ``height`` image (``at``: how it was scaled) is refused under
    ``max_pixels`` (``None``: no limit), or ``None`` within it: every reader's one rule."""
    if check_max_pixels(max_pixels) is None or width * height <= max_pixels:
        return None
    limit = f"the limit of {max_pixels} pixels (max_pixels raises it)"
    return f"{width}x{height} px{at} is over {limit}"


def decode(
    path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS, background: float = 1.0
) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` float32 RGB in [0, 1], EXIF orientation applied.

    Handles what Pillow reads (PNG, JPEG, WebP, BMP, TIFF, ...) in any mode: palette (with or
    without transparency), grey, grey+alpha, RGBA, 16-bit grey, CMYK.

    Raises:
      ImageError: missing, empty, not an image, truncated, or over ``max_pixels``.
      InputError: ``max_pixels`` is not a pixel limit (:func:`check_max_pixels`).
    """
    check_max_pixels(max_pixels)
    path = Path(path)
    try:
        info = path.stat()
    except OSError as e:  # missing, a symbolic-link loop, a name too long
        reason = "no such file" if e.errno == errno.ENOENT else e.strerror
        raise ImageError(f"{shown(path)}: {reason}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(info.st_mode):
        # Opening a FIFO blocks until a writer comes; a device never ends.
        raise ImageError(f"{path}: not a regular file (a pipe, device or socket)")
    size = info.st_size
    if size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            # Pillow warns by its own limit; ours, below, is the one that counts. Pillow's
            # global limit is the process's: a program (the CLI) may lift it, a library not.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                # Refuse decompression bombs from the header, before decoding any pixels.
                if why := over_pixel_limit(img.width, img.height, max_pixels):
                    raise ImageError(f"{path}: {why}")
                turn = _TURNS.get(orientation(img))
                img.load()
                array = _to_rgb_array(img if turn is None else img.transpose(turn), background)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(
            f"{path}: over Pillow's pixel limit (PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS}); a program may raise it"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        # Pillow reports truncation and corrupt data as OSError/SyntaxError with a short text.
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from None
    if array.size == 0:
        raise ImageError(f"{path}: image has no pixels")
    if not np.all(np.isfinite(array)):  # float TIFFs can hold NaN or infinity
        raise ImageError(f"{path}: image has non-finite pixel values")
    return array


# EXIF orientation -> the transpose that shows the stored pixels upright (as
# ImageOps.exif_transpose does); 5-8 turn the image by 90 degrees.
_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation(img: Image.Image) -> int:
    """An opened image's EXIF orientation (1: upright), from what was read before its pixels.

    Pillow's ``PngImageFile.getexif`` decodes the whole image to look for an ``eXIf`` chunk
    after the pixels: a 74-byte PNG whose header claims 2^31 x 2^31 pixels then exhausts
    memory before any limit is compared. The base method reads only the chunks before the
    pixels, where the PNG extensions place ``eXIf`` and browsers look for it.
    """
    try:
        value = Image.Image.getexif(img).get(0x0112, 1)
    except Exception:  # noqa: BLE001 - untrusted metadata: an unreadable block is no turn
        return 1
    return value if isinstance(value, int) and value in _TURNS else 1


def probe_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(height, width)`` of an image as displayed (EXIF rotation applied, as
    :func:`decode` applies it), from its header alone, without decoding any pixel; ``None``
    when the header cannot be read."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # opening a pipe would block
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                turned = orientation(img) in (5, 6, 7, 8)
                return (img.width, img.height) if turned else (img.height, img.width)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def scaled_shape(height: int, width: int, max_dim: int) -> tuple[int, int]:
    """``(height, width)`` scaled so the longer side is ``max_dim``, truncated to integers as
    the tutorial does (``tf.cast(shape * scale, tf.int32)``)."""
    scale = max_dim / max(height, width)
    return int(height * scale), int(width * scale)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``(H, W, 3)`` to ``(height, width, 3)``, like ``tf.image.resize``'s
    default (half-pixel centres, no antialiasing), so the tutorial's inputs are reproduced.

    Computed in float64, one axis at a time, and rounded once to float32.
    """
    if image.shape[:2] == (height, width):
        return image
    rows = _linear_weights(image.shape[0], height)
    cols = _linear_weights(image.shape[1], width)
    out = np.einsum("ih,jw,hwc->ijc", rows, cols, np.asarray(image, np.float64), optimize=True)
    return out.astype(np.float32)


def _linear_weights(size: int, new_size: int) -> np.ndarray:
    """``(new_size, size)``: each output position's weights on the input positions, for
    linear interpolation with half-pixel centres, clamped at the edges. The positions are
    computed in float32, as TensorFlow computes them, so its weights are matched exactly."""
    scale = np.float32(size / new_size)
    centre = (np.arange(new_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    low = np.floor(centre)
    frac = (centre - low).astype(np.float64)
    rows = np.arange(new_size)
    weights = np.zeros((new_size, size))
    np.add.at(weights, (rows, np.clip(low.astype(np.int64), 0, size - 1)), 1 - frac)
    np.add.at(weights, (rows, np.clip(low.astype(np.int64) + 1, 0, size - 1)), frac)
    return weights


def load(
    path: str | os.PathLike, max_dim: int | None = None, max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """Read an image and scale it so its longer side is ``max_dim`` (up or down, as the
    tutorial does); ``None`` keeps the size.

    Returns:
      ``(H, W, 3)`` float32 RGB in [0, 1].

    Raises:
      ImageError: unreadable file, or an image that scales to zero pixels on a side.
    """
    image = decode(path, max_pixels)
    if max_dim is None:
        return image
    height, width = scaled_shape(*image.shape[:2], max_dim)
    if min(height, width) < 1:
        raise ImageError(
            f"{path}: {image.shape[1]}x{image.shape[0]} px scales to {width}x{height} "
            f"at max-dim {max_dim}; too thin"
        )
    return resize(image, height, width)


def load_mask(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A grey mask as ``(H, W)`` float32 in [0, 1] (a colour image's mean of R, G, B): white
    selects, black does not, grey selects partly, and transparent pixels are outside it
    (as if black: a white shape drawn on a transparent layer selects the shape). Not resized:
    it is fitted to its image's size when used (``nst_jax.core.targets.resize_masks``).

    Raises:
      ImageError: unreadable, or black (or transparent) everywhere: it selects nothing.
    """
    mask = decode(path, max_pixels, background=0.0).mean(axis=-1)
    if not mask.max() > 0:
        raise ImageError(f"{path}: the mask is black everywhere: it selects no pixel")
    return mask


def load_labels(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A label image as ``(K, H, W)`` float32 masks, one per colour other than black (black:
    no style). Colours are ordered by their 8-bit ``(R, G, B)`` value, so grey levels go from
    dark to light: the k-th colour is the region of the k-th style.

    Raises:
      ImageError: unreadable, or black everywhere.
    """
    rgb = np.round(decode(path, max_pixels, background=0.0) * 255).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    labels = [code for code in np.unique(codes) if code != 0]
    if not labels:
        raise ImageError(f"{path}: the label image is black everywhere: it has no region")
    return np.stack([(codes == code).astype(np.float32) for code in labels])


def names_a_file(output: str | os.PathLike) -> bool:
    """Whether a run's output path names one image rather than a folder of results: an
    image suffix, or another suffix on a path that is not a folder (whose extension
    :func:`check_output_path` then refuses): every driver's one rule."""
    path = Path(output)
    suffix = path.suffix.lower()
    return suffix in SAVE_FORMATS or (suffix != "" and not path.is_dir())


def check_output_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be written as an image (known extension, parent a directory).

    Raises:
      ImageError: unknown extension, a parent that is not a directory, or a path the system
        cannot look at (a name too long, a symbolic-link loop).
    """
    path = Path(path)
    try:
        return _check_output_path(path)
    except (OSError, RuntimeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ImageError(f"{shown(path)}: cannot be written ({reason})") from None


def _check_output_path(path: Path) -> Path:
    if path.suffix.lower() not in SAVE_FORMATS:
        raise ImageError(
            f"{path}: unknown output extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(SAVE_FORMATS)}"
        )
    parent = nearest_existing_parent(path)
    if not parent.is_dir():
        raise ImageError(f"{path}: {parent} is a file, where the image needs a folder")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, where the image is a file")
    return path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[0, 1]`` float -> uint8, rounding to nearest."""
    return np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


PROVENANCE_KEY = "nst_jax"


def save(
    path: str | os.PathLike,
    image: np.ndarray,
    quality: int = 95,
    metadata: dict | None = None,
    replace: bool = True,
) -> Path:
    """Write ``(H, W, 3)`` float RGB in [0, 1] as PNG, JPEG or WebP (by extension), atomically:
    a temporary file beside the target is renamed over it, so no reader sees half a file.

    ``metadata`` (JSON-able) is stored in a PNG text chunk; see :func:`read_provenance`.
    ``replace=False`` writes only a new file (:func:`nst_jax.files.atomic.atomic_write`).

    Raises:
      ImageError: unknown extension, a parent that is not a directory, or a non-finite image.
    """
    path = check_output_path(path)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ImageError(f"{path}: refusing to write an image with non-finite values")
    pil = Image.fromarray(to_uint8(image), "RGB")
    fmt = SAVE_FORMATS[path.suffix.lower()]
    options = {} if fmt == "PNG" else {"quality": quality}
    if metadata is not None and fmt == "PNG":
        # Provenance: a PNG text chunk holding the command, settings and weights hash.
        info = PngImagePlugin.PngInfo()
        info.add_text(PROVENANCE_KEY, json.dumps(metadata, sort_keys=True))
        options["pnginfo"] = info
    atomic_write(path, lambda tmp: pil.save(tmp, format=fmt, **options), replace)
    return path


def provenance_text(path: str | os.PathLike) -> str | None:
    """The raw provenance text stored in a PNG, or ``None`` (also for unreadable files).

    Read from the chunks before the pixels (where :func:`save` puts it), without decoding
    any pixel: ``Image.text`` would decode the whole image to look for text after it, which
    a 20000 x 20000 px file (or a header claiming 2**31 px a side) turns into a bomb."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                text = img.info.get(PROVENANCE_KEY)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return text if isinstance(text, str) else None


def read_provenance(path: str | os.PathLike) -> dict:
    """The metadata :func:`save` stored in a PNG, parsed as strict JSON (untrusted data:
    callers check its fields before use).

    Raises:
      ImageError: unreadable file, no nst_jax provenance in it, or a record that is not a
        JSON object.
    """
    path = Path(path)
    text = provenance_text(path)
    if text is None:
        if probe_size(path) is None:
            decode(path)  # an unreadable file: the same one-line error as any input's
        raise ImageError(f"{path}: no nst_jax provenance (only PNGs written by nst-jax have it)")
    try:
        record = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        raise ImageError(f"{path}: damaged nst_jax provenance (not JSON: {e})") from None
    if not isinstance(record, dict):
        raise ImageError(f"{path}: damaged nst_jax provenance (not a JSON object)")
    return record


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")
