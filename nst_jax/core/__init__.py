"""The research core: per image, pure and jit-able; it knows no files, devices or loops.

``layers`` and ``vgg`` (the network), ``geometry`` (receptive fields and tiles), ``conv`` and
``winograd`` (how a convolution is computed), ``losses`` (pure loss functions), ``linalg``
(eigendecompositions safe under ``vmap`` on XLA:CPU), ``objective``
(targets and ``loss_fn``) and ``optim`` (optax transformations and the jitted step).
"""
