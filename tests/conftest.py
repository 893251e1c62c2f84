"""Shared fixtures: one official-layout weights file per session, loaded once, and small
8-bit test images, so every test reuses the same params and jit caches."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache
from PIL import Image

import nst_jax
from nst_jax.cli import main as cli
from nst_jax.files import image, keras_h5, weights
from nst_jax.session import process

# The XLA:CPU flags the nst-jax command runs with (nst_jax.session.process), set before any JAX
# computation: the suite then measures the programs users run from the command line.
process.set_xla_flags()

WEIGHTS_SEED = 0
# The command's options for quick runs: the 64 x 96 test images at --max-dim 96 and chunks
# of 10 steps, so every command test reuses the programs the others compiled.
FAST = ["--max-dim", "96", "--steps-per-call", "10", "-q"]
# A light objective (VGG19 to block 2) for the tests of a command's mechanics (jobs, kills,
# signals, races, resuming), which compare runs of one command with each other: its step
# compiles and runs in about half the time of the default's (a 6-image job at 32 px, 7.0 ->
# 3.3 s a process). The default objective is tested in test_core, test_losses, test_vgg and
# against the tutorial's code.
LIGHT_LAYERS = {
    "content_layers": ("block2_conv2",),
    "style_layers": ("block1_conv1", "block2_conv1"),
}
LIGHT = ["--content-layers", "block2_conv2", "--style-layers", "block1_conv1,block2_conv1"]


@pytest.fixture(autouse=True)
def _isolated_weight_places(tmp_path_factory, monkeypatch):
    """Keep every test away from the user's real weights and caches."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NST_JAX_WEIGHTS_DIR", str(home / "weights"))
    monkeypatch.setenv("NST_JAX_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(home / "keras"))
    monkeypatch.delenv("NST_JAX_WEIGHTS", raising=False)
    # JAX's compilation cache is process-wide: tests keep it off (one test turns it on in a
    # subprocess of its own).
    monkeypatch.setenv("NST_JAX_COMPILE_CACHE", "off")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)


_CACHE_SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@contextlib.contextmanager
def compile_cache_settings_kept():
    """Undo what a command run in this process did to JAX's compilation cache settings.

    The command may set them for its own process (``--compile-cache``); run in-process by a
    test, that would leave later tests writing into a folder that pytest has since deleted.
    """
    before = [getattr(jax.config, name) for name in _CACHE_SETTINGS]
    try:
        yield
    finally:
        if [getattr(jax.config, name) for name in _CACHE_SETTINGS] != before:
            for name, value in zip(_CACHE_SETTINGS, before, strict=True):
                jax.config.update(name, value)
            compilation_cache.reset_cache()


@pytest.fixture(autouse=True)
def _compile_cache_settings_restored():
    with compile_cache_settings_kept():
        yield


@pytest.fixture(scope="session")
def numpy_params() -> dict:
    """The random params written into the test weights file (He-normal, seed 0)."""
    return keras_h5.random_params(WEIGHTS_SEED)


@pytest.fixture(scope="session")
def weights_h5(tmp_path_factory, numpy_params) -> str:
    """A weights file in the official Keras layout (``_W_1:0`` names), random values."""
    path = tmp_path_factory.mktemp("weights") / weights.OFFICIAL_NAME
    keras_h5.write_keras_h5(numpy_params, path, naming="official")
    return str(path)


@pytest.fixture(scope="session")
def params(weights_h5):
    """Params loaded through the users' path (``load_vgg19``) from the official-layout file."""
    return nst_jax.load_vgg19(weights_h5)


@pytest.fixture(scope="session")
def params64(numpy_params) -> dict:
    """The test weights in float64, as NumPy arrays: JAX keeps them float64 where
    ``jax.enable_x64`` is on (exactness is shown in float64)."""
    return jax.tree.map(lambda a: np.asarray(a, np.float64), numpy_params)


def random_params(module, shape, seed: int) -> dict:
    """Params of ``module`` for a ``shape`` input, every leaf random (norm scales and biases
    included, so that no part of the network is an identity the comparison would not see):
    kernels LeCun-normal, the rest 0.1-normal around Flax's initial value. Drawn by NumPy
    from the shapes alone: initialising through JAX op by op would compile each op."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape, jnp.float64))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            return rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
        return ("scale" in name) + rng.normal(0, 0.1, leaf.shape)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def eight_bit_image(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like test image: smooth shapes plus blocks of flat colour, quantised to 8 bits.

    Flat areas give many equal neighbours, as decoded 8-bit photos have, which is where the
    total-variation subgradient at 0 matters.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    phase = rng.random(3) * 6.28
    smooth = 0.5 + 0.4 * np.sin(6 * x[..., None] + 4 * y[..., None] + phase)
    blocks = rng.random((height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)
    image = np.where(blocks[:height, :width] > 0.6, blocks[:height, :width], smooth)
    return (np.round(image * 255) / 255).astype(np.float32)


@pytest.fixture(scope="session")
def content_image() -> np.ndarray:
    """64 x 96 content image (H x W)."""
    return eight_bit_image(64, 96, seed=1)


def texture_image(height: int, width: int) -> np.ndarray:
    """A colourful texture (stripes, waves, checks) whose Grams differ strongly from the
    content's, so the style term has somewhere to go even with random VGG weights."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [
        (np.sin(x * 0.9) + 1) / 2,
        (np.sin(y * 0.7 + x * 0.3) + 1) / 2,
        ((x // 4 + y // 4) % 2).astype(float),
    ]
    return (np.round(np.stack(channels, -1) * 255) / 255).astype(np.float32)


@pytest.fixture(scope="session")
def style_image() -> np.ndarray:
    """64 x 96 style texture; style targets are Grams, so its size need not match."""
    return texture_image(64, 96)


@pytest.fixture(scope="session")
def noisy_content(content_image) -> np.ndarray:
    """The content image plus sub-8-bit noise: no two neighbours are equal.

    Max pooling's gradient jumps where a window has tied maxima, and convolution rounding that
    differs between two correct implementations (jitted vs op-by-op, XLA vs TensorFlow) breaks
    near-ties differently; comparisons meant to be tight over many steps use this image.
    """
    noise = np.random.default_rng(5).uniform(-0.5 / 255, 0.5 / 255, content_image.shape)
    return np.clip(content_image + noise, 0, 1).astype(np.float32)


def link_weights(weights_h5: str, target: Path) -> None:
    """Puts the session's 80 MB weights file at ``target`` as a hard link, not a copy.

    A copy per test wrote about 20 GB per run of the suite and filled a CI disk. The command
    never writes into an input (it writes beside it and renames), so a link is as safe as a
    copy; ``files`` still checks at teardown that the shared file was left as it was.
    """
    try:
        os.link(weights_h5, target)
    except OSError:  # another file system: a link cannot cross it
        shutil.copy(weights_h5, target)


@pytest.fixture
def files(tmp_path, content_image, style_image, weights_h5):
    """content.png, style.png, init.png, the weights (w.h5), a file and an empty folder."""
    to_pil = lambda a: Image.fromarray(image.to_uint8(a))  # noqa: E731
    to_pil(content_image).save(tmp_path / "content.png")
    to_pil(style_image).save(tmp_path / "style.png")
    to_pil(style_image[::-1]).save(tmp_path / "init.png")
    link_weights(weights_h5, tmp_path / "w.h5")
    (tmp_path / "regular").write_text("x")
    (tmp_path / "out").mkdir()
    before = os.stat(weights_h5)
    yield tmp_path
    after = os.stat(weights_h5)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns), (
        "the test wrote into the session's shared weights file"
    )


def into(states: list):
    """A hook (``on_event``) that keeps each event's state in ``states``."""
    return lambda event: states.append(event.state)


def exit_code(argv) -> int:
    """The ``nst-jax`` command's status for ``argv`` (any values, as strings), whether it
    returns it or argparse exits with it."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


_BIG_HASHES: dict[tuple, str] = {}


def file_hash(path: Path) -> str:
    """``path``'s SHA-256. A big file's hash is kept, keyed by its inode, size and times to
    the nanosecond: any write changes its ctime, so a kept hash is never stale, and the
    80 MB weights file that most refusal tests snapshot twice is hashed once a worker."""
    info = path.stat()
    if info.st_size < 1 << 20:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    if key not in _BIG_HASHES:
        _BIG_HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _BIG_HASHES[key]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with its contents' hash (what must not change
    when a command is refused)."""
    return {
        str(p.relative_to(folder)): file_hash(p) if p.is_file() and not p.is_symlink() else "dir"
        for p in sorted(folder.rglob("*"))
    }


@contextlib.contextmanager
def compiles_recorded():
    """Yields a list that gets the name of each program XLA compiles inside the block."""
    compiled = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def assert_refused(files: Path, argv, *fragments, capsys) -> str:
    """Run the command ``argv``: it must exit 2 with one stderr line holding each of
    ``fragments``, no traceback, and leave every file under ``files`` as it was."""
    before = snapshot(files)
    code = exit_code(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert str(fragment) in err, err
    assert snapshot(files) == before, "a file was written, changed or removed"
    return err
