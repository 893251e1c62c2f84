"""A dataset job killed with SIGKILL at random moments, rerun after each kill, against the
same job run uninterrupted: every output once, byte for byte the same, the failures listed.

    python scripts/check_dataset_kills.py [--images 240] [--kills 5] [--seed 7]

Each kill comes once a random number of results (more than the last kill left) exist.

The job: mixed-size images in nested folders, 2 corrupt files and a text file, at
``--max-dim 48 --steps 4`` (random weights of the official shapes).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
COMMAND = [sys.executable, "-m", "nst_jax.cli"]


def main() -> None:
    from test_dataset import kill_once_written, photo_tree, results

    from nst_jax.dataset import manifest, records
    from nst_jax.files import keras_h5

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        keras_h5.write_keras_h5(keras_h5.random_params(0), tmp / "w.h5")
        tree = photo_tree(tmp / "tree", args.images, mixed_aspects=True)
        out = tmp / "out"
        argv = ["stylize", str(tree), "--style", str(ROOT / "samples" / "hubble.jpg"),
                "-o", str(out), "--weights", str(tmp / "w.h5"), "--max-dim", "48",
                "--steps", "4", "--compile-cache", str(tmp / "cache"), "-q"]  # fmt: skip
        started = time.monotonic()
        whole = subprocess.run([*COMMAND, *argv], capture_output=True)
        seconds = time.monotonic() - started
        reference = results(out)
        shutil.rmtree(out)
        rng = random.Random(args.seed)
        for _ in range(args.kills):
            # Killed once a random number of results (more than so far) exist: each kill
            # lands mid-job, wherever the batches are.
            if len(results(out)) + 1 >= len(reference):
                break  # the last kill left too little to kill in
            target = rng.randint(len(results(out)) + 1, len(reference) - 1)
            found = kill_once_written(argv, out, target)
            print(f"killed once {target} results existed: {found} there", flush=True)
        final = subprocess.run([*COMMAND, *argv], capture_output=True, text=True)
        stored = records.read_records(manifest.load_plan(out))
        failed = [r for r in stored.values() if r["status"] == "failed"]
        same = results(out) == reference
        print(f"uninterrupted: exit {whole.returncode}, {seconds:.1f} s, {len(reference)} outputs")
        print(f"after {args.kills} kills and reruns: exit {final.returncode}, "
              f"{len(results(out))} outputs, byte-identical: {same}, failures recorded: "
              f"{len(failed)} ({'; '.join(sorted({r['reason'] for r in failed}))})")  # fmt: skip


if __name__ == "__main__":
    main()
