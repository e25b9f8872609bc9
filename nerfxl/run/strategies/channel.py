"""LandMark's channel parallel (``--strategy channel``, docs/landmark.md): every plane and line of one
grid split along its channels over the processes (:mod:`nerfxl.parallel.channel_parallel`)."""

from __future__ import annotations

from nerfxl.parallel.channel_parallel import ChannelParallelField, check_channel_split, merge_channel_states

from .joint import JointStrategy


class Channel(JointStrategy):
    name = "channel"
    part_kind = "channels"
    background_on_every_process = True  # see channel_parallel.py

    def check_split(self, config, world_size):
        g = config.field.grid
        check_channel_split(g.density_channels, g.appearance_channels, world_size)

    def split_field(self, field_module, config, ctx):
        return ChannelParallelField(field_module, ctx)

    def merge_parts(self, parts, saved, where):
        return merge_channel_states(parts, where)
