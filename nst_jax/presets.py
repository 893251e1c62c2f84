"""Named starting points for a run's settings: the tutorial's, and Gatys et al.'s converted
to this project's normalisation."""

from __future__ import annotations

from nst_jax.config import StyleConfig


def gatys_weights(alpha: float = 1.0, beta: float = 1e3, reference_dim: int = 512):
    """Gatys et al. (CVPR 2016) content and style weights in this project's normalisation.

    Gatys: ``alpha * 1/2 sum (F - P)^2`` at one content layer, and
    ``beta * sum_l 1/5 * 1/(4 N_l^2 M_l^2) sum (G_l - A_l)^2`` with unnormalised Grams
    ``G = F^T F`` (N_l channels, M_l positions). Here Grams are divided by ``M_l`` and each
    term is a mean divided by the number of layers, so:

    - style: ``1/(4 N^2 M^2) sum (G - A)^2 = mean((G/M - A/M)^2) / 4``, giving
      ``style_weight = beta / 4`` (the 1/5 is our 1/n_layers);
    - content: ``1/2 sum (F - P)^2 = h w c / 2 * mean((F - P)^2)``, giving
      ``content_weight = alpha * h w c / 2``, which depends on the image size: ``block4_conv2``
      of a ``reference_dim`` square image is ``(dim/8)^2 x 512``.

    Returns:
      ``(content_weight, style_weight)``; with the defaults (alpha/beta = 1e-3, the paper's
      main setting) ``(1048576.0, 250.0)``.
    """
    h = w = reference_dim // 8
    return alpha * h * w * 512 / 2, beta / 4


PRESETS: dict[str, StyleConfig] = {
    # The TensorFlow tutorial, exactly:
    # https://www.tensorflow.org/tutorials/generative/style_transfer
    "tutorial": StyleConfig(),
    # Gatys et al., "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016:
    # relu4_2 content, relu1_1..relu5_1 style, L-BFGS from noise, average pooling (their
    # recommendation), no total variation; weights converted by gatys_weights().
    "gatys": StyleConfig(
        content_layers=("block4_conv2",),
        content_weight=gatys_weights()[0],
        style_weight=gatys_weights()[1],
        tv_weight=0.0,
        optimizer="lbfgs",
        init="noise",
        pooling="avg",
        steps=500,
    ),
}
