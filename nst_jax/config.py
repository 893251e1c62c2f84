"""``StyleConfig``: the flat public settings of a run, with the tutorial's as defaults, and
what each driver honours of them.

``StyleConfig`` is built from the core's two configs, whose fields it holds as its own: the
objective's (:class:`nst_jax.core.objective.ObjectiveConfig`: layers, weights, style loss,
pooling) and the optimiser's (:class:`nst_jax.core.optim.OptimizerConfig`), plus what a
``stylize`` run adds (steps, scales, inputs, how it runs). Every core function takes a
``StyleConfig`` where it takes one of those; ``config.objective`` and ``config.optim`` give
the parts alone. Each field is documented by its metadata (``StyleConfig.help(name)``), from
which the ``nst-jax`` options are generated.
"""

from __future__ import annotations

import dataclasses

from nst_jax.core import extractors
from nst_jax.core.conv import CONV_METHODS
from nst_jax.core.fields import (
    check_choice,
    check_count,
    check_finite,
    field_help,
    part_of,
    setting,
)
from nst_jax.core.geometry import check_tile
from nst_jax.core.objective import STYLE_LAYERS, ObjectiveConfig
from nst_jax.core.optim import (  # noqa: F401 (names of the settings, public here)
    AVERAGE_MAX,
    OPTIMIZER_ALIASES,
    OPTIMIZERS,
    OptimizerConfig,
)
from nst_jax.core.style_terms import BUILT_IN

INITS = ("content", "noise", "style")  # or a path to an image file
LOOPS = ("auto", "device", "host")
PRESERVE_COLOR = ("none", "luminance", "histogram")
# The built-in style terms; more may be registered (nst_jax.register_style_term).
STYLE_LOSSES = BUILT_IN
TUTORIAL_STYLE_LAYERS = STYLE_LAYERS
SCALE_RATIO = 2**0.5  # between consecutive sizes of a coarse-to-fine run


@dataclasses.dataclass(frozen=True)
class StyleConfig(OptimizerConfig, ObjectiveConfig):
    """Settings of a run. Defaults are the TensorFlow tutorial's.

    Each field's documentation is its ``help`` metadata (``StyleConfig.help(name)``), which
    ``nst-jax stylize --help`` shows too. Fields by concern: the objective (layers, weights,
    pooling: :class:`~nst_jax.core.objective.ObjectiveConfig`), the optimiser
    (:class:`~nst_jax.core.optim.OptimizerConfig`), the schedule (``steps``, ``scales``,
    ``min_size``, ``coarse_steps``), the inputs (``init``, ``seed``, ``preserve_color``,
    ``style_scale``) and how it runs (``steps_per_call``, ``loop``, ``tile``, ``conv``).

    Weights and the learning rate may each be a number or, for a batch of N images, a sequence
    of N numbers: one setting per image, swept in one compiled program.
    """

    steps: int = setting(1000, "optimisation steps at the last (full) scale")
    scales: int = setting(
        1, "coarse-to-fine: sizes growing by sqrt(2), the last full size (multiscale.py)"
    )
    min_size: int | None = setting(
        None, "coarse-to-fine from this longest side in px (instead of a number of scales)"
    )
    coarse_steps: int | None = setting(
        None, "steps at each scale before the last (default: the steps of the last)"
    )
    preserve_color: str = setting(
        "none",
        "keep the content's colours: luminance-only transfer, or the style's colours "
        "matched to the content's (color.py)",
        choices=PRESERVE_COLOR,
    )
    style_scale: float | None = setting(
        None, "style resized so its longest side is this times the content's", "positive"
    )
    style_scales: tuple[float | None, ...] | None = setting(
        None, "one style_scale per style (None: style_scale's)", "per_style"
    )
    steps_per_call: int = setting(
        50, "steps per chunk: the progress interval; on accelerators one compiled call"
    )
    loop: str = setting(
        "auto",
        "where a chunk's steps loop: device (one compiled fori_loop), host (a Python loop "
        "over a jitted step), auto (host on CPU, where XLA runs convolutions in loops "
        "slower; device elsewhere)",
        choices=LOOPS,
    )
    init: str = setting(
        "content", "starting image: content, noise (from the seed), style, or an image file"
    )
    seed: int | tuple[int, ...] = setting(
        0, "PRNG seed of noise initialisation (in a batch, one seed per image may be given)"
    )
    tile: int | str | None = setting(
        None,
        "compute each step's loss and gradient in tiles of N px (plus halos), exactly: "
        "for print sizes that do not fit in memory; auto: tile only the scales that would "
        "not fit, in the largest tiles that do; off (tiling.py)",
        "tile",
    )
    conv: str = setting(
        "auto",
        "3x3 convolutions: direct, winograd (F(2x2,3x3): fewer multiplications, the same "
        "result up to float rounding, which Adam's near-sign steps can grow over many steps "
        "in float32; float64 agrees to 1e-12), longer compile; or auto (Winograd on CPU "
        "for runs long enough to repay its compile)",
        choices=CONV_METHODS,
    )

    @staticmethod
    def help(name: str) -> str:
        """The documentation of field ``name``."""
        return field_help(StyleConfig, name)

    @property
    def objective(self) -> ObjectiveConfig:
        """The objective's settings alone."""
        return part_of(self, ObjectiveConfig)

    @property
    def optim(self) -> OptimizerConfig:
        """The optimiser's settings alone."""
        return part_of(self, OptimizerConfig)

    def __post_init__(self) -> None:
        self._normalise_objective()
        self._normalise_optimizer()
        self._normalise_run()
        self.validate()

    def _normalise_run(self) -> None:
        if self.tile == "off":
            object.__setattr__(self, "tile", None)
        if isinstance(self.seed, (list, tuple)):
            object.__setattr__(self, "seed", tuple(_integer("seed", s) for s in self.seed))
        else:
            object.__setattr__(self, "seed", _integer("seed", self.seed))
        if self.style_scales is not None:
            scales = tuple(None if v is None else float(v) for v in self.style_scales)
            object.__setattr__(self, "style_scales", scales)

    def validate(self) -> None:
        """Raise ``ValueError`` with one line naming the first bad setting."""
        self.validate_objective()
        self.validate_optimizer()
        for field, choices in (("preserve_color", PRESERVE_COLOR), ("loop", LOOPS)):
            check_choice(field, getattr(self, field), choices)
        check_choice("conv", self.conv, CONV_METHODS)
        if not isinstance(self.init, str) or not self.init:
            raise ValueError(f"init must be one of {', '.join(INITS)} or an image path")
        for v in self.style_scales or ():
            if v is not None:
                check_finite("style_scales", v, strict=True)
        if self.style_scale is not None:
            check_finite("style_scale", self.style_scale, strict=True)
        for seed in self.seed if isinstance(self.seed, tuple) else (self.seed,):
            if not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
                raise ValueError(f"seed must be an integer in [-2**63, 2**63), got {seed!r}")
        for field in ("steps", "steps_per_call", "scales"):
            check_count(field, getattr(self, field))
        for field in ("min_size", "coarse_steps"):
            check_count(field, getattr(self, field), optional=True)
        self._validate_tile()

    def _validate_tile(self) -> None:
        if self.tile is None:
            return
        if self.tile != "auto" and (isinstance(self.tile, bool) or not isinstance(self.tile, int)):
            raise ValueError(f"tile must be a number of pixels, auto or off, got {self.tile!r}")
        reason = self.untileable()
        if reason is None and self.tile != "auto":
            network = extractors.network(self.extractor)
            check_tile(self.tile, self.content_layers + self.style_layers, network)
        if reason is not None:
            raise ValueError(f"tiled runs {reason}")

    def untileable(self, masked: bool = False) -> str | None:
        """Why a run of these settings (with content ``masked``) cannot be tiled, or ``None``
        when it can: the end of a sentence that starts "tiled runs". Tiles compute the Gram
        loss's exact gradient (:mod:`nst_jax.run.tiling`); what needs the whole image at once
        cannot be tiled."""
        if not extractors.has_known_fields(self.extractor):
            return (
                f"need an extractor of known receptive fields ({extractors.KNOWN_FIELDS}), "
                f"not {self.extractor}"
            )
        if self.style_loss != "gram":
            return f"match Gram matrices: style_loss {self.style_loss} needs the whole image"
        if self.normalize_gradients:
            return "cannot normalise gradients (each layer's L1 norm is the whole image's)"
        if self.optimizer == "lbfgs":
            return "use a gradient optimizer: lbfgs's line search needs the whole image's loss"
        if masked:
            return "take no masks: give tile=None"
        return None

    def unmaskable(self) -> str | None:
        """Why a run of these settings cannot take content masks (spatial control), or
        ``None`` when it can."""
        reason = super().unmaskable()
        if reason is None and self.tile is not None:
            return f"tiled runs {self.untileable(masked=True)}"
        return reason

    def _swept(self) -> list:
        return [*super()._swept(), self.learning_rate]


def _integer(name: str, value) -> int:
    try:
        whole = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _changed(field: str):
    default = StyleConfig.__dataclass_fields__[field].default
    return lambda config: getattr(config, field) != default, field


def _swept(field: str):
    return lambda config: isinstance(getattr(config, field), tuple), f"{field} (a sweep)"


def _refusals(*rules) -> dict:
    return {why: asks for asks, why in rules}


# What each driver cannot honour: a rule per field, true where a config asks it of the
# driver. A driver refuses such a config (check_honoured) rather than run it and ignore the
# setting. stylize honours every field; the frame loop optimises one frame at a time from
# the warped previous one; training takes its schedule from its own settings, so only the
# objective comes from here.
_FRAME_LOOP = _refusals(
    *map(_changed, ("scales", "min_size", "coarse_steps", "tile", "preserve_color")),
    *map(_changed, ("tol", "average")),
    (lambda config: config.init not in ("content", "noise"), "init (content or noise only)"),
    (lambda config: config.loop == "device", "loop (device)"),
    *map(_swept, ("content_weight", "style_weight", "tv_weight", "learning_rate", "seed")),
)
_OBJECTIVE_FIELDS = {field.name for field in dataclasses.fields(ObjectiveConfig)}
_FIT = _refusals(
    *(_changed(f.name) for f in dataclasses.fields(StyleConfig) if f.name not in _OBJECTIVE_FIELDS),
    *map(_swept, ("content_weight", "style_weight", "tv_weight")),
)
HONOURS = {"stylize": {}, "frames": _FRAME_LOOP, "fit": _FIT}


def check_honoured(driver: str, config: ObjectiveConfig) -> None:
    """Raise ``ValueError`` naming every setting of ``config`` that ``driver``
    (``"stylize"``, ``"frames"``, ``"fit"``) cannot honour (:data:`HONOURS`); a config of
    another class than ``StyleConfig`` is checked for the fields it has."""
    refused = []
    for why, asks in HONOURS[driver].items():
        try:
            if asks(config):
                refused.append(why)
        except AttributeError:  # a config without that field (an ObjectiveConfig)
            continue
    if refused:
        raise ValueError(
            f"{driver} cannot honour {', '.join(refused)}: leave them at their defaults"
        )
