"""Feed-forward stylisation networks trained on the core's objective: Johnson et al.'s
transformation network (:mod:`.johnson`) and Huang & Belongie's AdaIN decoder
(:mod:`.adain`), built from the layers in :mod:`.layers`. Each is a Flax module applied to
one ``(H, W, 3)`` image in [0, 1] (batch it with ``jax.vmap``)."""
