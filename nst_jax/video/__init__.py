"""Video: frames, optical flow, consistency weights and the frame loop of Ruder, Dosovitskiy &
Brox ("Artistic style transfer for videos", GCPR 2016). This is the guide to ``nst-jax
video``::

    pip install -e '.[video]'   # OpenCV's optical flow, ffmpeg in a wheel
    nst-jax video clip.mp4 --style s.jpg -o styled.mp4 --max-dim 256 --steps 300
    nst-jax video frames/ --style s.jpg -o styled/ --flow-offsets 1,2,4 --fps 30

Each frame is optimised with the same objective plus the temporal loss: it starts from the
previous stylised frame warped by the optical flow, and is held to it where the flow can be
trusted.

- IN is a video file or a folder of frames (same size, in natural order); OUT is a video
  (``.mp4``, ``.mov``, ``.mkv``, ``.m4v``: H.264, IN's frame rate or ``--fps``, IN's audio
  as AAC) or a folder of frames. A video's frames are made in ``OUT.frames/`` and kept.
- Flow: ``--flow dis`` (default) or ``farneback``, OpenCV's, forward and backward,
  computed on CPU threads ahead of the frame being optimised (:mod:`.flow`). Consistency
  weights follow the paper (disocclusions, motion boundaries and pixels new to the view get
  0: :mod:`nst_jax.core.temporal`).
- ``--temporal-weight W`` (0 turns the loss off; the default carries artistic-videos'
  balance of temporal to content weight over to [0, 1] images: :mod:`.settings`),
  ``--flow-offsets 1,2,4`` adds the long-term loss. The style options are ``stylize``'s
  (``--steps`` per frame, ``--style-weight``, ``--style-loss``, ``--init content|noise``
  for the first frame, ...); what a frame loop cannot honour (``--scales``, ``--tile``,
  ``--preserve-color``, ``--average``, ``--tol``, sweeps) is refused.
- Frames are written atomically as they finish; a killed run continues with ``--resume``
  from its last finished frame, to the frames an uninterrupted run writes. One compiled
  step serves every frame. The end prints the warping error (the masked squared difference
  between each frame and the previous one warped: :func:`nst_jax.metrics.warping_error`).

With ``--model MODEL`` (a trained or imported model: ``nst-jax train``, ``nst-jax models``)
each frame is one forward pass instead, with the style options ``stylize --model`` takes
(``--style``, ``--alpha``, ``--style-index``, ``--style-blend``); no flow, so no OpenCV
(:mod:`nst_jax.session.model_video`). The frames folder and ``--resume`` work alike. A
network applies to each frame alone, so it may flicker where the temporal loss would not.

In Python the command is :func:`nst_jax.session.run_video`; the loop itself, for scripts::

    clip = frames.probe("clip.mp4")
    feeder = flow.FlowFeeder(frames.read(clip, 256), 0, 0, (1,), "dis")
    for result in loop.stylize_frames(params, feeder, style, config, VideoSettings()):
        ...   # a FrameResult a frame; on_event= gets the events of every driver
"""
