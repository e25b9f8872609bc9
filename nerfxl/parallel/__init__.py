"""Multi-process plumbing for NeRF-XL (nerf-xl.md §5–§6).

- :mod:`.distributed`: every collective of the project (the NeRF-XL block exchange, variable-size
  gathers, gradient SUM all-reduce, broadcast, scalars) with a world_size 1 fast path, and
  :class:`DistContext` / :func:`init_distributed`.
- :mod:`.launch`: :func:`launch` spawns D local processes, or runs inside torchrun.
- :mod:`.tiles`: which process owns which tiles (K/D consecutive tiles each).
- :mod:`.partition_based`: NeRF-XL's exchange of per-ray segment blocks (training, and inference
  where only rank 0 gathers).
- :mod:`.sample_based`: the per-sample exchange the paper compares against.

Names are resolved lazily (PEP 562) so that importing the package does not pull in torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "DEFAULT_TIMEOUT_S": "distributed", "DistContext": "distributed", "all_gather_blocks": "distributed",
    "all_gather_tensor": "distributed", "all_gather_variable": "distributed",
    "all_reduce_gradients": "distributed", "all_reduce_scalar": "distributed",
    "all_reduce_scalars": "distributed", "backend_for": "distributed", "barrier": "distributed",
    "broadcast_parameters": "distributed", "broadcast_bytes": "distributed", "all_gather_bytes": "distributed",
    "gather_to_main": "distributed", "init_distributed": "distributed",
    "is_main_process": "distributed", "resolve_device": "distributed", "shutdown": "distributed",
    "single_process_context": "distributed", "split_into_replicas": "distributed",
    "broadcast_async": "distributed", "duplicate_context": "distributed",
    "WorkerError": "launch", "launch": "launch", "launched_externally": "launch", "running_under_torchrun": "launch",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"nerfxl.parallel.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'nerfxl.parallel' has no attribute {name!r}")
