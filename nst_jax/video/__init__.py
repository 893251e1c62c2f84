"""Video: frames, optical flow, consistency weights and the frame loop (Ruder et al. 2016).

``nst-jax video`` is built from these; a script can drive them too::

    clip = frames.probe("clip.mp4")
    feeder = flow.FlowFeeder(frames.read(clip, 256), 0, 0, (1,), "dis")
    for result in loop.stylize_frames(params, feeder, style, config, loop.VideoSettings()):
        ...

The pure pieces (warping, consistency weights, the temporal losses) are in
:mod:`nst_jax.core.temporal`.
"""
