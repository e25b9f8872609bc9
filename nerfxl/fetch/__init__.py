"""Dynamic fetching: render a model larger than the device, streaming the N × N blocks of a ground plane
(or the NeRF-XL tiles) around the camera (landmark.md §6–7; docs/fetching.md).

- :mod:`.window`: blocks of a ground plane (:class:`BlockLayout`) and N × N windows of them.
- :mod:`.store`: host block stores — all blocks in (pinned) host memory, or read on demand from the
  memory-mapped checkpoint.
- :mod:`.buffers`: a window's planes as one contiguous device tensor, and the overlapped copy pipeline
  (kept blocks device → device while new blocks come host → device).
- :mod:`.field`: the grid that reads the compute buffer, with σ masked outside the window.
- :mod:`.limits`: what a camera sees (its footprint), the height/tilt limits, error or clamp.
- :mod:`.fetcher`: the ping-pong buffers and the per-frame policy (trigger, background fetch, swap).
- :mod:`.tiles`: whole NeRF-XL tiles as the fetch unit (slots, tile stores, the tile target).
- :mod:`.load`: open a trained run for fetching.
"""
