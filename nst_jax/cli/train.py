"""``nst-jax train``: the options parsed into one :class:`~nst_jax.session.TrainRequest`, the
model trained (:func:`nst_jax.session.run_training`) and reported.

``--method johnson --style S`` trains Johnson et al.'s network for one style on the
project's objective; ``--method adain --styles DIR`` trains Huang & Belongie's decoder for
any style. A killed run continues with ``--resume`` to the same params as an uninterrupted
one.
"""

from __future__ import annotations

import argparse
from typing import Any

from nst_jax.cli import values
from nst_jax.cli.options import (
    HelpFormatter,
    add_common,
    add_config_options,
    add_field_options,
    add_max_pixels,
    config_from_args,
    given,
    reword,
    style_losses,
)
from nst_jax.core.objective import ObjectiveConfig
from nst_jax.errors import InputError
from nst_jax.feedforward.train import TrainSettings
from nst_jax.session.training import TrainRequest


def add_parser(sub: Any) -> None:
    """The ``train`` command's options: ``TrainSettings``' fields, the objective's fields
    (johnson) and the run's own."""
    p = sub.add_parser(
        "train",
        help="train a feed-forward model (Johnson or AdaIN)",
        description="Train a network that stylises in one pass: Johnson et al.'s for one "
        "STYLE, or an AdaIN decoder for any style, on the images of --data.",
        formatter_class=HelpFormatter,
    )
    training = p.add_argument_group("training")
    # Required: hours of training on the wrong network are not a default worth having.
    training.add_argument("--method", choices=("johnson", "adain"), required=True,
                          help="the network: johnson (one style) or adain (any style)")  # fmt: skip
    add_field_options(training, TrainSettings, skip=("method",))
    p.add_argument("--data", metavar="DIR", required=True, help="folder of training images")
    p.add_argument("--style", metavar="STYLE", help="johnson: the style image")
    p.add_argument("--styles", metavar="DIR", help="adain: folder of style images")
    p.add_argument("--style-size", type=values.positive_int, help="johnson: style's long side")
    add_common(p, "the model folder", required=True)
    p.add_argument("--checkpoint-every", type=values.positive_int, metavar="N",
                   default=TrainRequest.checkpoint_every)  # fmt: skip
    p.add_argument(
        "--resume", action="store_true", help="continue the run in MODEL (none: a new run)"
    )
    p.add_argument("--force", action="store_true", help="start over, replacing MODEL's run")
    p.add_argument("--plot", metavar="PATH", help="plot of the loss terms (needs matplotlib)")
    add_max_pixels(p)
    add_config_options(p, ObjectiveConfig)


def request_from_args(args: argparse.Namespace) -> TrainRequest:
    """The one training request the options describe. ``--style-weight`` is the objective's
    for johnson and the AdaIN loss's lambda for adain; adain takes no other objective."""
    method = args.method
    objective_given = given(args, ObjectiveConfig)
    if method == "adain":
        refused = [f for f in objective_given if f != "style_weight"]
        if refused:
            options = ", ".join("--" + f.replace("_", "-") for f in refused)
            raise InputError(f"{options}: johnson's objective; adain trains on its paper's loss")
    if style_losses(args) is not None:
        raise InputError("--style-loss: a training run takes one style loss, not a list")
    adain_weight = {"style_weight": args.style_weight} if args.style_weight is not None else {}
    try:
        settings = TrainSettings(**given(args, TrainSettings),
                                 **(adain_weight if method == "adain" else {}))  # fmt: skip
        objective = config_from_args(args).objective if method == "johnson" else None
    except ValueError as e:
        raise InputError(reword(str(e))) from None
    return TrainRequest(
        settings, args.data, args.output, objective, args.style, args.styles, args.style_size,
        args.checkpoint_every, args.resume, args.force, args.plot, args.weights, not args.quiet,
        args.max_pixels,
    )  # fmt: skip


def cmd_train(args: argparse.Namespace, control) -> int:
    """The ``train`` command; returns the exit status."""
    from nst_jax import session

    session.process.check_backend()
    outcome = session.run_training(request_from_args(args), control)
    if outcome.stopped is not None:
        return control.interrupted(
            f"stopped at step {outcome.stopped}; the checkpoint is kept in "
            f"{outcome.folder / 'checkpoints'}; rerun with --resume to continue"
        )
    print(outcome.line)
    return control.ended()
