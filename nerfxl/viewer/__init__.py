"""The web viewer: a viser server that renders the browser's camera (``nerfxl view``, ``train --viewer``).

One-way like the rest of the package: :mod:`.camera` (browser camera ↔ our cameras), :mod:`.progressive`
(what to render next: a coarse frame while the camera moves, a refined one when it rests), :mod:`.overlays`
(tile boxes, camera frustums, the fetch window as line segments), :mod:`.camera_path` (keyframes → a
nerfstudio ``camera_path.json``), :mod:`.backends` (how a frame is rendered: one process, several, with
dynamic fetching, or between training steps) and :mod:`.server` (the viser page, its panel and the render loop).
"""
