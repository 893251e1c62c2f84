"""What ``stylize`` adds around the core: batches and sweeps (``inputs``, ``batching``),
chunks and scales (``loop``, ``multiscale``, ``stylize``), devices (``devices``, ``rows``),
print sizes (``tiling``) and the memory a run needs (``memory``, ``tile_memory``)."""
