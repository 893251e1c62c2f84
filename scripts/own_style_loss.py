"""A new style loss as one entry of the style-term registry: the Gram matrices of the
features' centred values (their covariance), so the style's mean colour of each channel is
left to the content. Computed in the same VGG pass as the content term.

    python scripts/own_style_loss.py CONTENT STYLE OUT.png [STEPS]
"""

import sys

import nst_jax

NAME = "covariance"


def covariance(features):  # (h, w, c) -> (c, c): the Gram of the centred features
    return nst_jax.losses.gram_matrix(features - features.mean((0, 1)))


nst_jax.register_style_term(
    NAME, nst_jax.StyleTerm(covariance, covariance, nst_jax.losses.style_loss)
)

if __name__ == "__main__":
    content, style = (nst_jax.image.load(path, 512) for path in sys.argv[1:3])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    config = nst_jax.StyleConfig(style_loss=NAME, steps=steps)
    result = nst_jax.stylize(content, style, params=nst_jax.load_vgg19(), config=config)
    nst_jax.image.save(sys.argv[3], result.image)
