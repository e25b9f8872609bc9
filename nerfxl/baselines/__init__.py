"""Independent-training baselines for the scaling study (nerf-xl.md §8).

- :mod:`.overlap`: tile boxes grown by an overlap and clamped to the scene box (Mega-NeRF style).
- :mod:`.ray_selection`: which training pixels' rays hit a box, seeded batches among them, and the
  fraction of a tile's samples that fall outside its own tile.
- :mod:`.blending`: 3D per-sample blend weights over tiles (Mega-NeRF) and 2D per-image blend
  weights over camera clusters (Block-NeRF).
- :mod:`.clustering`: seeded k-means of training cameras with overlapping memberships (Block-NeRF).
- :mod:`.subset`: a dataset restricted to some of its images, without copying them.
- :mod:`.block_nerf`: the ``independent-2d`` baseline — K models trained alone on camera clusters,
  novel views blended as images.
- :mod:`.contraction`: a grid's resolution concentrated in a box, the rest of the scene squeezed
  around it (piecewise linear per axis).
- :mod:`.mega_nerf`, :mod:`.mega_nerf_sampler`, :mod:`.mega_nerf_render`: the ``independent-3d``
  baseline — K tile models trained alone on the rays hitting their grown boxes, blended per sample.
- :mod:`.runs`: ``nerfxl train --method independent-*`` and ``nerfxl eval`` of a baseline folder.
"""
