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
import numpy as np

from nst_jax.config import StyleConfig
from nst_jax.core import extractors, optim, targets
from nst_jax.core.conv import resolve_conv
from nst_jax.core.fields import program_key
from nst_jax.core.objective import TERMS
from nst_jax.run import batching, plan

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
    kib = next(
        (int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemAvailable:")),
        None,
    )
    if kib is None:
        return None
    free = kib * 1024
    cgroup = _cgroup_free_bytes()
    if cgroup is not None:
        free = min(free, cgroup)
    return free + process_rss_bytes()


def param_shapes(config: StyleConfig, n: int, height: int, width: int, dtype=jnp.float32):
    """The shapes of the params a run's step takes (:func:`nst_jax.run.plan.step_params`).

    Raises:
      ValueError: the extractor declares no ``param_shapes``: its memory cannot be told.
    """
    shapes = extractors.extractor(config.extractor).param_shapes
    if shapes is None:
        raise ValueError(f"extractor {config.extractor} declares no param_shapes")
    params = {
        name: {leaf: jax.ShapeDtypeStruct(shape, dtype) for leaf, shape in leaves.items()}
        for name, leaves in shapes.items()
    }
    return jax.eval_shape(lambda p: plan.step_params(p, config, n, height, width), params)


def step_bytes(config: StyleConfig, n: int, height: int, width: int, dtype=jnp.float32) -> int:
    """Bytes XLA needs for one compiled step of an ``(n, height, width, 3)`` batch (worked
    out once per program: the settings that shape it, the convolution, the shape)."""
    conv = "winograd" if uses_winograd(config, n, height, width) else "direct"
    # The program's settings, and the optimiser's wrappers (their state is memory too).
    wrappers = {f: getattr(config, f) for f in ("average", "tol", "tol_window")}
    static = program_key(config).replace(conv=conv, **wrappers)
    return _step_bytes(static, n, height, width, jnp.dtype(dtype).name)


@functools.lru_cache(maxsize=64)
def _step_bytes(config: StyleConfig, n: int, height: int, width: int, dtype: str) -> int:
    spec = lambda shape: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    params = param_shapes(config, n, height, width, dtype)
    content = jax.eval_shape(
        lambda p, x: targets.content_features(p, x, config),
        params,
        spec((height, width, 3)),
    )
    # The style's statistics at the content's size (only MRF's depend on the size).
    style = jax.eval_shape(
        lambda p, x: targets.style_targets(p, x, config), params, spec((height, width, 3))
    )
    batched = lambda tree: jax.tree.map(lambda v: spec((n, *v.shape)), tree)  # noqa: E731
    batch_targets = {
        "content": batched(content),
        "style": batched(style),
        "weights": {term: spec((n,)) for term in TERMS},
        "key": jax.ShapeDtypeStruct((n,), jax.random.key(0).dtype),
    }
    tx = optim.make_optimizer(config)
    images = spec((n, height, width, 3))
    states = jax.eval_shape(lambda x: batching.init_states(tx, x), images)
    compiled = (
        batching.batch_step(config, tx)
        .lower(params, batch_targets, images, states, np.int32(0))
        .compile()
    )
    stats = compiled.memory_analysis()
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
    )


def forward_bytes(config: StyleConfig, height: int, width: int, dtype=jnp.float32) -> int:
    """Bytes of one style image's targets (a forward pass through the style layers), plus
    the process's present memory: a style may be larger than every content."""
    spec = jax.ShapeDtypeStruct((height, width, 3), dtype)
    params = param_shapes(config, 1, height, width, dtype)
    forward = jax.jit(lambda p, x: targets.style_targets(p, x, config))
    stats = forward.lower(params, spec).compile().memory_analysis()
    used = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    return process_rss_bytes() + int(used * ALLOCATOR_SLACK)


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
    work = plan.pixel_steps(config, n, height, width)
    return resolve_conv(config.conv, work) == "winograd"


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
        smallest = targets.min_side(config)
        if side < smallest:
            raise MemoryError(
                f"{what}: needs about {needed / GIB:.1f} GiB, {available / GIB:.1f} GiB "
                f"available: no image size fits"
            )
        batch = f"a batch of {n} at " if n > 1 else ""
        # On XLA:CPU remat saves nothing (scripts/README.md, "Memory estimate and large
        # images"), so it is suggested only where it can help.
        cpu = jax.default_backend() == "cpu"
        hint = "" if config.remat or cpu else ", or remat=True"
        if uses_winograd(config, n, height, width):
            hint += ", or conv=direct (less memory, slower)"
        raise MemoryError(
            f"{what}: {batch}{width}x{height} px needs about {needed / GIB:.1f} GiB, "
            f"{available / GIB:.1f} GiB available; about max_dim={side} fits{hint}"
        )
    return needed
