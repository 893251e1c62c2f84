"""``nst-jax score CONTENTS STYLES RESULTS``: the library's scores over folders, as CSV plus a
summary table (:mod:`nst_jax.session.score`)."""

from __future__ import annotations

import argparse
import sys

from nst_jax.cli import values
from nst_jax.cli.options import add_common, add_max_pixels
from nst_jax.errors import InputError
from nst_jax.files import image, weights


def add_parser(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score results against their contents and styles (CFSD, every style term)",
        description="Pairs the i-th result with the i-th content (sorted names, as ArtFID's "
        "code does) and with the i-th style, or the one style; writes one CSV row per result "
        "and prints each score's mean.",
    )
    p.add_argument("contents", metavar="CONTENTS", help="folder (or file) of content images")
    p.add_argument("styles", metavar="STYLES", help="folder of styles: one, or one per result")
    p.add_argument("results", metavar="RESULTS", help="folder of results")
    add_common(p, "the CSV to write (default scores.csv)")
    p.add_argument("--extractor", choices=tuple(weights.NETWORKS), default="vgg19",
                   help="the network whose features are compared (default vgg19)")  # fmt: skip
    p.add_argument("--max-dim", type=values.positive_int, default=image.DEFAULT_MAX_DIM,
                   help="every image's longer side is scaled to this "
                   f"(default {image.DEFAULT_MAX_DIM})")  # fmt: skip
    add_max_pixels(p)
    p.add_argument("--terms", type=values.style_loss_names, metavar="TERM[,TERM,...]",
                   help="the style terms scored (default: every registered one but mrf, whose "
                   "memory grows with the square of the pixels)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing CSV")
    p.add_argument("--lpips", action="store_true",
                   help="add each result's LPIPS to its content (weights fetch lpips)")  # fmt: skip
    p.add_argument("--artfid", action="store_true",
                   help="add FID to the styles, and ArtFID (weights fetch artfid)")  # fmt: skip


def cmd_score(args: argparse.Namespace, control) -> int:
    from nst_jax.session import score

    if args.output == "":
        raise InputError("-o: an empty path")
    request = score.ScoreRequest(
        args.contents, args.styles, args.results, output=args.output or "scores.csv",
        extractor=args.extractor, weights=args.weights, max_dim=args.max_dim,
        max_pixels=args.max_pixels,
        terms=args.terms, force=args.force, lpips=args.lpips, artfid=args.artfid,
    )  # fmt: skip

    def report(done: int, total: int) -> None:
        if not args.quiet:
            print(f"\rscored {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    _, means = score.run_score(request, report)
    print(f"{request.output}\n" + score.summary_table(means))
    return 0
