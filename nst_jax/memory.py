"""How much memory a run will need, and how much there is, before any work starts.

The estimate is XLA's own account of the compiled step (``memory_analysis()``: arguments,
outputs, temporaries, code) plus what the process already holds. It compiles the step, which
the run then finds in the compilation caches; with ``remat`` the temporaries shrink, and so
does the estimate.
"""

from __future__ import annotations

import functools
import math
import os
import resource
from pathlib import Path

import jax
import jax.numpy as jnp

from nst_jax import vgg
from nst_jax.config import StyleConfig

GIB = 2**30
# XLA's account of a step ran 3% below the peak RSS it gave at 512 to 2048 px (allocator
# slack it cannot see; scripts/README.md). Estimates are raised by 5%, so that a run whose
# raw estimate barely fits is tiled or refused rather than killed for memory mid-way.
ALLOCATOR_SLACK = 1.05


def process_rss_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``), else its peak so far."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cgroup_free_bytes() -> int | None:
    """Room left under a container's memory limit (cgroup v2), if there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def available_bytes(device: jax.Device | None = None) -> int | None:
    """Memory a run on ``device`` may still take, or ``None`` when unknown.

    Accelerators: the device's limit minus what is in use. CPU: ``MemAvailable`` (and any
    container limit), plus this process's own resident memory, since the estimate counts it.
    """
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" not in stats:
            return None
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in meminfo.splitlines()
                if line.startswith("MemAvailable:")), None)  # fmt: skip
    if kib is None:
        return None
    free = kib * 1024
    cgroup = _cgroup_free_bytes()
    if cgroup is not None:
        free = min(free, cgroup)
    return free + process_rss_bytes()


def step_bytes(config: StyleConfig, n: int, height: int, width: int, dtype=jnp.float32) -> int:
    """Bytes XLA needs for one compiled step of an ``(n, height, width, 3)`` batch."""
    from nst_jax import batching, objective, optim, run  # the run's modules: not at import

    spec = lambda shape: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    params = {
        name: {"kernel": spec(kernel), "bias": spec(bias)}
        for name, (kernel, bias) in vgg.conv_shapes().items()
    }
    params = jax.eval_shape(lambda p: run.step_params(p, config, n, height, width), params)
    content = jax.eval_shape(
        lambda p, x: vgg.image_features(p, x, config.content_layers, config.pooling),
        params,
        spec((height, width, 3)),
    )
    # The style's statistics at the content's size (only MRF's depend on the size).
    style = jax.eval_shape(
        lambda p, x: objective.style_targets(p, x, config), params, spec((height, width, 3))
    )
    batched = lambda tree: jax.tree.map(lambda v: spec((n, *v.shape)), tree)  # noqa: E731
    targets = {
        "content": batched(content),
        "style": batched(style),
        "weights": {term: spec((n,)) for term in objective.TERMS},
    }
    tx = optim.make_optimizer(config)
    images = spec((n, height, width, 3))
    states = jax.eval_shape(lambda x: batching.init_states(tx, x), images)
    compiled = batching.batch_step(config, tx).lower(params, targets, images, states).compile()
    stats = compiled.memory_analysis()
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
    )


def estimate_bytes(config: StyleConfig, n: int, height: int, width: int) -> int:
    """Peak memory of a run: what the process holds once the step is compiled (compilers'
    memory is not all handed back to the system) plus what the step itself needs, with
    :data:`ALLOCATOR_SLACK`."""
    step = step_bytes(config, n, height, width)
    return process_rss_bytes() + int(step * ALLOCATOR_SLACK)


def largest_side(
    config: StyleConfig, n: int, height: int, width: int, needed: int, available: int
) -> int:
    """The longest side (aspect kept) whose run would fit in ``available`` bytes, assuming
    the part of ``needed`` above the process's present memory grows with the pixel count."""
    fixed = process_rss_bytes()
    per_pixel = max(needed - fixed, 1) / (height * width)
    pixels = max(available - fixed, 0) / per_pixel
    return int(math.sqrt(pixels * max(height, width) / min(height, width)))


def uses_winograd(config: StyleConfig, n: int, height: int, width: int) -> bool:
    """Whether a run of these settings and size computes its convolutions by Winograd."""
    from nst_jax import run

    work = run.pixel_steps(config, n, height, width)
    return vgg.resolve_conv(config.conv, work) == "winograd"


def fitting_config(
    config: StyleConfig,
    n: int,
    height: int,
    width: int,
    available: int | None = None,
    what: str = "this run",
) -> StyleConfig:
    """``config`` if the run fits; with ``conv="auto"`` choosing Winograd, the direct
    convolution if only that fits (Winograd's tile planes and larger kernels need more
    memory); else ``MemoryError`` as :func:`check_fits` raises it."""
    try:
        check_fits(config, n, height, width, available, what)
        return config
    except MemoryError:
        if config.conv != "auto" or not uses_winograd(config, n, height, width):
            raise
    direct = config.replace(conv="direct")
    check_fits(direct, n, height, width, available, what)
    return direct


def check_fits(
    config: StyleConfig,
    n: int,
    height: int,
    width: int,
    available: int | None = None,
    what: str = "this run",
) -> int:
    """Return the estimate, or raise ``MemoryError`` naming the largest size that fits.

    Args:
      config: the run's settings (``remat`` changes the estimate).
      n: batch size.
      height: image height at the largest scale.
      width: image width.
      available: bytes allowed (default: :func:`available_bytes`; unknown means no check).
      what: named in the message.
    """
    needed = estimate_bytes(config, n, height, width)
    available = available if available is not None else available_bytes()
    if available is not None and needed > available:
        side = largest_side(config, n, height, width, needed, available)
        smallest = 2 ** vgg.pools_before(config.style_layers + config.content_layers)
        if side < smallest:
            raise MemoryError(
                f"{what}: needs about {needed / GIB:.1f} GiB, {available / GIB:.1f} GiB "
                f"available: no image size fits"
            )
        batch = f"a batch of {n} at " if n > 1 else ""
        # On XLA:CPU --remat was measured to save nothing (scripts/README.md), so it is
        # suggested only where it can help.
        cpu = jax.default_backend() == "cpu"
        hint = "" if config.remat or cpu else ", or add --remat"
        if uses_winograd(config, n, height, width):
            hint += ", or --conv direct (less memory, slower)"
        raise MemoryError(
            f"{what}: {batch}{width}x{height} px needs about {needed / GIB:.1f} GiB, "
            f"{available / GIB:.1f} GiB available; about --max-dim {side} fits{hint}"
        )
    return needed


# Whole-image arrays a tiled step holds besides one window's pass: the image, its gradient,
# Adam's two moments, a hook's copies of those three (the command's checkpointing keeps the
# last state), the content, and the update's temporaries: 8 counted during pass 2 (a test
# in tests/test_tiling.py), with a margin for the update (peak RSS: scripts/README.md).
WHOLE_IMAGE_ARRAYS = 10
TILE_CANDIDATES = (1024, 768, 512, 384, 256, 192, 128)
# ``auto`` tiles give one window's pass at most this share of the memory left once the
# whole-image arrays are counted, and are at most 1024 px: past that a larger tile saves
# little time (the halo's share shrinks slowly: 1.36x the pixels at 1024, 1.18x at 2048) and
# costs gigabytes the rest of the machine is better off keeping.
AUTO_TILE_SHARE = 0.5


def _param_shapes(config: StyleConfig, n: int, height: int, width: int, dtype=jnp.float32):
    from nst_jax import run

    spec = lambda shape: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    params = {
        name: {"kernel": spec(kernel), "bias": spec(bias)}
        for name, (kernel, bias) in vgg.conv_shapes().items()
    }
    return jax.eval_shape(lambda p: run.step_params(p, config, n, height, width), params)


def tiled_bytes(config: StyleConfig, n: int, height: int, width: int, tile: int) -> int:
    """Peak memory of a run tiled in ``tile`` px tiles: the process, one window's pass (XLA's
    analysis), and the whole-image arrays (:data:`WHOLE_IMAGE_ARRAYS`, content features)."""
    fixed, per_pixel = _window_model(config, uses_winograd(config, n, height, width))
    margin = vgg.halo(config.content_layers + config.style_layers)
    window = fixed + per_pixel * (tile + 2 * margin) ** 2
    return process_rss_bytes() + int(window) + _whole_bytes(config, n, height, width)


@functools.lru_cache(maxsize=8)
def _window_model(config: StyleConfig, winograd: bool) -> tuple[float, float]:
    """A window pass's bytes as ``fixed + per_pixel * window pixels``, fitted to XLA's
    analysis of two window sizes (compiling every candidate tile would take minutes)."""
    from nst_jax import objective, tiling

    config = objective.static_config(config).replace(conv="winograd" if winograd else "direct")
    params = _param_shapes(config, 1, 1, 1)
    margin = vgg.halo(config.content_layers + config.style_layers)
    small, large = 128, 256
    bytes_small = tiling.window_bytes(config, params, small)
    bytes_large = tiling.window_bytes(config, params, large)
    pixels = [(t + 2 * margin) ** 2 for t in (small, large)]
    per_pixel = (bytes_large - bytes_small) / (pixels[1] - pixels[0])
    return bytes_small - per_pixel * pixels[0], per_pixel


def _whole_bytes(config: StyleConfig, n: int, height: int, width: int) -> int:
    pixels = n * height * width
    channels = {name: bias[0] for name, (_, bias) in vgg.conv_shapes().items()}
    strides = {name: vgg.receptive_span(name)[2] for name in config.content_layers}
    features = sum(
        (height // strides[name]) * (width // strides[name]) * channels[name]
        for name in config.content_layers if name in channels
    )  # fmt: skip
    return 4 * (pixels * 3 * WHOLE_IMAGE_ARRAYS + n * features)


def fitting_tile(
    config: StyleConfig,
    n: int,
    height: int,
    width: int,
    available: int | None = None,
    what: str = "this run",
) -> int | None:
    """``None`` when the untiled step fits; else the largest tile whose window pass fits in
    :data:`AUTO_TILE_SHARE` of the memory the whole-image arrays leave (or, failing that, in
    all of it); else
    ``MemoryError`` naming the largest size that fits tiled (:data:`TILE_CANDIDATES`, at
    least the layers' halo; a tile past the image's longer side is not tried)."""
    available = available if available is not None else available_bytes()
    untiled = config.replace(tile=None)
    if available is None or estimate_bytes(untiled, n, height, width) <= available:
        return None
    if max(height, width) <= vgg.smallest_tile(config.content_layers + config.style_layers):
        check_fits(untiled, n, height, width, available, what)  # no tile is smaller: refuse
    base = process_rss_bytes() + _whole_bytes(config, n, height, width)
    for share in (AUTO_TILE_SHARE, 1.0):
        tile = _largest_tile(config, n, height, width, base + share * (available - base))
        if tile is not None:
            return tile
    smallest = vgg.smallest_tile(config.content_layers + config.style_layers)
    tile = _tile_candidates(config, height, width)[-1]
    needed = tiled_bytes(config, n, height, width, tile)
    whole = base - process_rss_bytes()
    per_pixel = whole / (height * width)
    room = available - (needed - whole)
    side = int(math.sqrt(max(room, 0) / per_pixel * max(height, width) / min(height, width)))
    if side < smallest:
        raise MemoryError(
            f"{what}: needs about {needed / GIB:.1f} GiB even in {tile} px tiles, "
            f"{available / GIB:.1f} GiB available: no image size fits"
        )
    raise MemoryError(
        f"{what}: {width}x{height} px needs about {needed / GIB:.1f} GiB even in {tile} px "
        f"tiles, {available / GIB:.1f} GiB available; about --max-dim {side} fits tiled"
    )


def _tile_candidates(config: StyleConfig, height: int, width: int) -> list[int]:
    """:data:`TILE_CANDIDATES` from the smallest tile up to below the longer side (the
    smallest tile alone when none is)."""
    smallest = vgg.smallest_tile(config.content_layers + config.style_layers)
    candidates = [t for t in TILE_CANDIDATES if smallest <= t < max(height, width)]
    return candidates or [smallest]


def _largest_tile(config: StyleConfig, n: int, height: int, width: int, budget: float):
    for tile in _tile_candidates(config, height, width):
        if tiled_bytes(config, n, height, width, tile) <= budget:
            return tile
    return None


def check_tiled_fits(
    config: StyleConfig,
    n: int,
    height: int,
    width: int,
    available: int | None = None,
    what: str = "this run",
) -> int | None:
    """The tile the largest scale runs in (``None``: untiled), or ``MemoryError`` when that
    does not fit: ``auto`` chooses (:func:`fitting_tile`); a given tile is checked."""
    if config.tile == "auto":
        return fitting_tile(config, n, height, width, available, what)
    tile = scale_tile(config, n, height, width)
    if tile is None:
        check_fits(config.replace(tile=None), n, height, width, available, what)
        return None
    available = available if available is not None else available_bytes()
    needed = tiled_bytes(config, n, height, width, tile)
    if available is not None and needed > available:
        raise MemoryError(
            f"{what}: {width}x{height} px needs about {needed / GIB:.1f} GiB in {tile} px "
            f"tiles, {available / GIB:.1f} GiB available; try a smaller --tile or --tile auto"
        )
    return tile


def scale_tile(config: StyleConfig, n: int, height: int, width: int) -> int | None:
    """The tile a scale of ``height x width`` runs in: ``None`` (untiled) without
    ``config.tile``, or when one tile holds the image; ``auto``: :func:`fitting_tile`."""
    if config.tile is None:
        return None
    if config.tile == "auto":
        return fitting_tile(config, n, height, width)
    return config.tile if max(height, width) > config.tile else None
