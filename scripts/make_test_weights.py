"""Write a VGG19 weights file in the official Keras layout, with random values from a seed.

The real loading code reads it exactly as it reads the official file, so tests and benchmarks
exercise the users' path without the 80 MB download.

    python scripts/make_test_weights.py weights/test_vgg19.h5 --seed 0 [--naming keras2]
"""

import argparse

from nst_jax.files import keras_h5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="where to write the .h5 file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--naming", choices=("official", "keras2"), default="official")
    args = parser.parse_args()
    keras_h5.write_keras_h5(keras_h5.random_params(args.seed), args.path, naming=args.naming)
    print(f"wrote {args.path} (seed {args.seed}, {args.naming} naming)")


if __name__ == "__main__":
    main()
