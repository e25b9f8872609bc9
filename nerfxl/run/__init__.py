"""The run layer: what a training run is made of and how it is stored, for every command that
trains, reads or rewrites one (train, eval, render, view, merge, check, fetching, baselines).

- :mod:`.config`: :class:`~.config.TrainConfig` (the run's ``config.yaml``) and its parts.
- :mod:`.layout`: names on disk — the run folder, the tile plan file, the checkpoint shard of each
  tile or part, and the ``strategy`` entry of a checkpoint's ``state.json``.
- :mod:`.strategies`: one object per strategy (tiles, branch, plane, channel, ddp), looked up with
  :func:`~.strategies.strategy_of`: how it spreads one model over the processes.
- :mod:`.strategy`: the same questions asked of a configuration (process counts, --replicas).
- :mod:`.load`: reading a run back — its dataset splits, its configuration, a checkpoint's state.
- :mod:`.state`: checkpoint tensors into modules, strictly, with one-line errors.
- :mod:`.parts`: a plane- or channel-parallel checkpoint's parts merged into its one tile.
- :mod:`.trained`: a saved run restored into a renderer (:func:`~.trained.load_trained`).

It depends only on the layers below it (data, fields, rendering and renderer, partition, parallel,
checkpoint, configio), never on the commands above it; tests/test_architecture.py checks that.
"""
