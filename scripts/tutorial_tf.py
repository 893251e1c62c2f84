"""The TensorFlow tutorial's own algorithm, as a reference
(https://www.tensorflow.org/tutorials/generative/style_transfer).

Its code is kept as the tutorial writes it (Keras VGG19, ``tf.GradientTape``,
``tf.optimizers.Adam``, ``tf.image.total_variation``), with the weights file as an argument
instead of a download.
``tests/test_tutorial_tf.py`` runs it beside nst_jax; run this file to compare by hand:

    pip install -e '.[tf]'
    python scripts/make_test_weights.py /tmp/vgg19_test.h5
    python scripts/tutorial_tf.py /tmp/vgg19_test.h5 --steps 10

TensorFlow is an optional extra (``tf``), never a runtime dependency of nst_jax.
"""

from __future__ import annotations

import argparse

import numpy as np

CONTENT_LAYERS = ["block5_conv2"]
STYLE_LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]


def tutorial_losses(
    weights_path: str,
    content_image: np.ndarray,
    style_image: np.ndarray,
    steps: int,
    style_weight: float = 1e-2,
    content_weight: float = 1e4,
    total_variation_weight: float = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the tutorial's training loop; return (loss before each step, final image).

    Args:
      weights_path: Keras VGG19 notop ``.h5`` file.
      content_image: ``(H, W, 3)`` float32 in [0, 1].
      style_image: ``(h, w, 3)`` float32 in [0, 1].
      steps: number of ``train_step`` calls.
    """
    train_step, image = tutorial_train_step(
        weights_path, content_image, style_image, style_weight, content_weight,
        total_variation_weight,
    )  # fmt: skip
    losses = [float(np.squeeze(train_step().numpy())) for _ in range(steps)]
    return np.asarray(losses), image.numpy()[0]


def tutorial_train_step(
    weights_path: str,
    content_image: np.ndarray,
    style_image: np.ndarray,
    style_weight: float = 1e-2,
    content_weight: float = 1e4,
    total_variation_weight: float = 30,
):
    """The tutorial's model, targets, optimizer and ``train_step``, ready to call.

    Returns:
      ``(step, image)``: ``step()`` runs one ``train_step`` and returns its loss (a tensor);
      ``image`` is the ``tf.Variable`` being optimised.
    """
    import tensorflow as tf

    def vgg_layers(layer_names):
        vgg = tf.keras.applications.VGG19(include_top=False, weights=weights_path)
        vgg.trainable = False
        outputs = [vgg.get_layer(name).output for name in layer_names]
        return tf.keras.Model([vgg.input], outputs)

    def gram_matrix(input_tensor):
        result = tf.linalg.einsum("bijc,bijd->bcd", input_tensor, input_tensor)
        input_shape = tf.shape(input_tensor)
        num_locations = tf.cast(input_shape[1] * input_shape[2], tf.float32)
        return result / (num_locations)

    class StyleContentModel(tf.keras.models.Model):
        def __init__(self, style_layers, content_layers):
            super().__init__()
            self.vgg = vgg_layers(style_layers + content_layers)
            self.style_layers = style_layers
            self.content_layers = content_layers
            self.num_style_layers = len(style_layers)
            self.vgg.trainable = False

        def call(self, inputs):
            inputs = inputs * 255.0
            preprocessed_input = tf.keras.applications.vgg19.preprocess_input(inputs)
            outputs = self.vgg(preprocessed_input)
            style_outputs, content_outputs = (
                outputs[: self.num_style_layers],
                outputs[self.num_style_layers :],
            )
            style_outputs = [gram_matrix(style_output) for style_output in style_outputs]
            content_dict = dict(zip(self.content_layers, content_outputs, strict=True))
            style_dict = dict(zip(self.style_layers, style_outputs, strict=True))
            return {"content": content_dict, "style": style_dict}

    extractor = StyleContentModel(STYLE_LAYERS, CONTENT_LAYERS)
    content = tf.constant(content_image[None])
    style_targets = extractor(tf.constant(style_image[None]))["style"]
    content_targets = extractor(content)["content"]
    image = tf.Variable(content)
    opt = tf.optimizers.Adam(learning_rate=0.02, beta_1=0.99, epsilon=1e-1)

    def style_content_loss(outputs):
        style_outputs = outputs["style"]
        content_outputs = outputs["content"]
        style_loss = tf.add_n(
            [
                tf.reduce_mean((style_outputs[name] - style_targets[name]) ** 2)
                for name in style_outputs.keys()
            ]
        )
        style_loss *= style_weight / len(STYLE_LAYERS)
        content_loss = tf.add_n(
            [
                tf.reduce_mean((content_outputs[name] - content_targets[name]) ** 2)
                for name in content_outputs.keys()
            ]
        )
        content_loss *= content_weight / len(CONTENT_LAYERS)
        return style_loss + content_loss

    @tf.function()
    def train_step(image):
        with tf.GradientTape() as tape:
            outputs = extractor(image)
            loss = style_content_loss(outputs)
            loss += total_variation_weight * tf.image.total_variation(image)
        grad = tape.gradient(loss, image)
        opt.apply_gradients([(grad, image)])
        image.assign(tf.clip_by_value(image, clip_value_min=0.0, clip_value_max=1.0))
        return loss

    return (lambda: train_step(image)), image


def tf_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The tutorial's ``tf.image.resize`` (bilinear, no antialiasing) of one image."""
    import tensorflow as tf

    return tf.image.resize(image[None], (height, width)).numpy()[0]


def main() -> None:
    import nst_jax

    parser = argparse.ArgumentParser(description="Compare nst_jax with the TF tutorial.")
    parser.add_argument("weights", help="Keras VGG19 notop .h5 file")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    content = np.round(rng.random((64, 96, 3)) * 255).astype(np.float32) / 255
    style = np.round(rng.random((80, 80, 3)) * 255).astype(np.float32) / 255
    tf_losses, _ = tutorial_losses(args.weights, content, style, args.steps)
    params = nst_jax.load_vgg19(args.weights)
    config = nst_jax.StyleConfig(steps=args.steps, steps_per_call=args.steps)
    jax_losses = nst_jax.stylize(content, style, params=params, config=config).losses
    for i, (a, b) in enumerate(zip(tf_losses, jax_losses, strict=True), start=1):
        print(f"step {i:4d}  tutorial {a:14.6g}  nst_jax {b:14.6g}  rel {abs(a - b) / a:.2e}")


if __name__ == "__main__":
    main()
