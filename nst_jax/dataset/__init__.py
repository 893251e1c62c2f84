"""Dataset jobs: stylise thousands of images, streamed, resumable, sharded, on one machine
or a Ray cluster. This is the guide to ``nst-jax stylize`` with many results.

**What makes a job.** Several contents (files, folders walked recursively, or
``--files-from LIST``), several ``--style``s or a sweep (``--style-weight 1e-3,1e-2,1e-1``,
``--style-loss gram,w2``). Results mirror the input tree under ``-o OUT/``, named
``NAME[_STYLE][_sw0.01][_w2].png``; ``--sheet grid.png`` adds a labelled grid::

    nst-jax stylize photos/ --style paintings/a.jpg --style paintings/b.jpg \
        --styles-per-image 1 --seed 7 -o stylized/
    nst-jax stylize photos/ --style s.jpg -o out/ --shard 0/4   # and 1/4, 2/4, 3/4
    nst-jax stylize photos/ --style s.jpg -o out/ --engine ray --ray-address ADDR

**Planned, then streamed.** The job is planned from file names and image headers
(:func:`plan_job`): every item (input, style set, setting), its output, its seed and its
batch, a pure function of the inputs and settings. Its manifest, ``OUT/.nst-jax/plan.json``,
is written before any pixel work (:func:`start`); images are then decoded by background
threads a few batches ahead of the run, so memory does not grow with the dataset.

**Continued by rerunning.** Each result is written atomically and recorded in
``OUT/.nst-jax/done-I-of-N.jsonl`` as it finishes (:mod:`.records`: named fields, the
input's identity, the result's SHA-256). Rerunning the same command skips the finished
items, redoes unfinished batches, and writes the bytes an uninterrupted job writes; a batch
redone for one of its items leaves the others' results and records as they were. What
changed between runs is caught: a result deleted or edited is made again; an input whose
bytes changed (same size) has its result redone; a style whose bytes changed, or an input
whose header changed, makes it another job, refused in one line naming the file (``--force``
starts over: a style change touches every result made with it). ``OUT/.nst-jax/
index-I-of-N.csv`` lists each shard's items: input, output, style(s), seed, status, reason.

**Failures.** An unreadable input is one line on stderr as it is met and a failure in the
records; the job goes on and ends with status 3 (a shard's status is its own items'). A
failed item is retried by a rerun once its input changed, or by ``--retry-failed``.

**What is an input.** In a folder: regular files with an image's extension; anything else
(``README.txt``, a FIFO, a link to nothing) is passed over, counted in one line, never
opened; the job's own output folder is never walked, wherever it lies. Names are the file
system's bytes, whatever their encoding. A file given twice is refused. Styles may be
files, folders or ``--styles-from LIST``; two with one file name are told apart by their
folders (``a_s``, ``b_s``).

**One run per shard.** A second run of the same shard on the same folder (two identical
commands started together) is refused in one line while the first holds the shard's lock,
which the kernel drops when the first ends, however it ends; different shards run side by
side.

**Shapes.** At most 7 buckets, each one compiled program: the longest side is
``--max-dim``, the short side's ratio one of 4 classes (each image runs at its class's aspect
and its result is resized back), or every result one size with ``--size WxH --fit
crop|pad``. A bucket's last batch is padded to ``--batch-size``, so it reuses the program.

**Styles per image.** ``--styles-per-image K --seed S`` gives each content K of the styles,
chosen by a hash of its relative path and the seed: the same choice whole, in shards, after
kills.

**Shards and clusters.** ``--shard I/N`` runs part I of N of the same plan with any
scheduler (a Slurm array, a Kubernetes indexed job, a shell loop); the N parts together are
the job. ``--engine ray`` runs the batches as Ray actors, one per GPU of the cluster
(``pip install 'nst_jax[ray]'``; every node must see the inputs, the weights and OUT).

**Progress.** The bar counts this run's items (skipped ones leave it), its images/s leave
compiles out, and its ETA adds the compiles still to come; ``OUT/.nst-jax/stats-I-of-N.json``
keeps this run's counts.

**Pixels.** A result's pixels do not depend on which other images share its batch: every
batch of a bucket runs that bucket's one program (padded to the batch size), whose images
do not interact. In float32 the same job gives the same bytes in one process setting; the
command sets XLA:CPU flags of its own (:func:`nst_jax.session.configure_for_program`), so a
library job gives the command's bytes after that call, and other kernels round otherwise
(Adam's near-sign steps can grow float32 rounding to visible differences; float64 agrees
to about 1e-12).

**In Python**, the command's job is :func:`nst_jax.session.run_job_request`; its parts::

    from nst_jax import dataset

    plan = dataset.plan_job(["photos/"], ["style.jpg"], "out/", config)
    dataset.start(plan)  # the manifest, before any pixel work (or continue this job)
    resources = dataset.Resources(params, config)
    for outcome in dataset.run_job(plan, resources, shard=(0, 1)):  # streamed, in order
        print(outcome.item.output, outcome.status, outcome.reason)  # done, failed, skipped
    print(dataset.summary(plan))  # {"done": ..., "failed": ..., "pending": ...}
"""

from __future__ import annotations

from nst_jax.dataset.engine import Outcome, Resources, run_job
from nst_jax.dataset.jobs import Progress, start, summary
from nst_jax.dataset.manifest import read_plan
from nst_jax.dataset.plan import Batch, Item, JobSettings, Plan, plan_job
from nst_jax.dataset.records import read_records

__all__ = [
    "Batch",
    "Item",
    "JobSettings",
    "Outcome",
    "Plan",
    "Progress",
    "Resources",
    "plan_job",
    "read_plan",
    "read_records",
    "run_job",
    "start",
    "summary",
]
