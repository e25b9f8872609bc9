"""One entry point for every dataset format: detect it, parse it, cut out a split.

``load_dataset(path)`` accepts a folder or a JSON file:

==============  ==================================================================================
nerfstudio      ``transforms.json`` (folder holding it, or the file)
blender         ``transforms_{train,val,test}.json`` with only ``camera_angle_x`` intrinsics
matrixcity      ``transforms_{train,test}.json`` with ``fl_x`` (MatrixCity ``pose/<block>/``), or a
                ``transforms.json`` whose frames carry ``rot_mat`` (a raw MatrixCity block)
mega-nerf       ``coordinates.pt`` + ``{train,val}/metadata``
llff            ``poses_bounds.npy`` + ``images/`` (folder holding it, or the file); checked before
                COLMAP, since LLFF folders usually keep COLMAP's ``sparse/`` too (``format="colmap"``
                reads that instead)
colmap          ``sparse/0/``, ``sparse/`` or the folder itself with cameras+images ``.bin``/``.txt``
==============  ==================================================================================

Images are never decoded here: a dataset of 100 000 frames costs its cameras and file names, and
the decoded images live in a cache bounded by ``cache_bytes`` (a second cache of the same bound
holds depth maps when the dataset has them). Missing image files are reported at load time;
unreadable ones when first read.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch

from nerfxl.data.dataset import Dataset, scene_box_from_cameras, scene_box_from_points
from nerfxl.data.formats import ALL_SPLITS, FORMAT_NAMES, PARSERS, ParsedScene
from nerfxl.data.formats.colmap import find_model_folder
from nerfxl.data.formats.common import PrescaledImages, fit_cameras_to_images, read_json
from nerfxl.data.formats.llff import POSES_FILE
from nerfxl.data.images import DEFAULT_CACHE_BYTES, DepthSource, ImageSource, PosesOnlyImages
from nerfxl.errors import ConfigError, DataError

# A point cloud smaller than this says too little about the scene's extent to bound it.
MIN_POINTS_FOR_BOX = 8

LOOKED_FOR = ("transforms.json (nerfstudio), transforms_{train,val,test}.json (Blender or MatrixCity), "
              "coordinates.pt (Mega-NeRF), poses_bounds.npy (LLFF), cameras+images .bin/.txt in sparse/0/, "
              "sparse/ or the folder itself (COLMAP)")


def _peek_frames(json_path: Path) -> tuple[dict, dict]:
    """(top-level object, first frame) of a transforms JSON, for format detection."""
    meta = read_json(json_path)
    if not isinstance(meta, dict):
        raise DataError(json_path, f"expected a JSON object at the top level, found {type(meta).__name__}")
    frames = meta.get("frames")
    first = frames[0] if isinstance(frames, list) and frames and isinstance(frames[0], dict) else {}
    return meta, first


def _split_file_format(folder: Path) -> str:
    """Blender or MatrixCity for a folder of transforms_{split}.json files."""
    for split in ("train", "test", "val"):
        json_path = folder / f"transforms_{split}.json"
        if json_path.is_file():
            meta, _ = _peek_frames(json_path)
            # Blender synthetic files carry only camera_angle_x; MatrixCity's pose files add fl_x.
            return "matrixcity" if "fl_x" in meta else "blender"
    raise DataError(folder, f"no transforms_{{train,val,test}}.json; looked for {LOOKED_FOR}")


def _resolve(path: Path) -> tuple[str, Path]:
    """(format, the path its parser takes)."""
    if not path.exists():
        raise DataError(path, "does not exist")
    if path.is_file():
        name = path.name
        if name == "coordinates.pt":
            return "mega-nerf", path.parent
        if name == POSES_FILE:
            return "llff", path.parent
        if name.startswith(("cameras.", "images.", "points3D.")) and path.suffix in (".bin", ".txt"):
            return "colmap", path.parent
        if path.suffix.lower() == ".json":
            if name in ("transforms_train.json", "transforms_val.json", "transforms_test.json"):
                return _split_file_format(path.parent), path.parent
            _, first = _peek_frames(path)
            return ("matrixcity" if "rot_mat" in first else "nerfstudio"), path
        raise DataError(path, f"not a dataset file; looked for {LOOKED_FOR}")
    if (path / "transforms.json").is_file():
        _, first = _peek_frames(path / "transforms.json")
        return ("matrixcity" if "rot_mat" in first else "nerfstudio"), path / "transforms.json"
    if any((path / f"transforms_{s}.json").is_file() for s in ("train", "val", "test")):
        return _split_file_format(path), path
    if (path / "coordinates.pt").is_file():
        return "mega-nerf", path
    if (path / POSES_FILE).is_file():
        return "llff", path
    if find_model_folder(path) is not None:
        return "colmap", path
    raise DataError(path, f"cannot tell the dataset format; looked for {LOOKED_FOR}")


def detect_format(path: str | Path) -> str:
    """The format name of the dataset at ``path`` (one of :data:`FORMAT_NAMES`)."""
    return _resolve(Path(path))[0]


def parse_scene(path: str | Path, format: str | None = None) -> ParsedScene:
    """All frames of the dataset at ``path``, parsed by the detected (or the given) format's parser."""
    path = Path(path)
    if format is None:
        fmt, target = _resolve(path)
    else:
        if format not in PARSERS:
            raise ConfigError(f"unknown dataset format {format!r}; known: {', '.join(FORMAT_NAMES)}")
        if not path.exists():
            raise DataError(path, "does not exist")
        fmt = format
        if fmt == "nerfstudio":
            target = path / "transforms.json" if path.is_dir() else path
        elif fmt == "matrixcity":
            target = path
        else:
            target = path if path.is_dir() else path.parent
    scene = PARSERS[fmt](target)
    _finish_scene_box(scene)
    return scene


def _finish_scene_box(scene: ParsedScene) -> None:
    """Give every scene a box computed once from all frames, so that all splits share it."""
    if scene.scene_box is not None:
        scene.metadata.setdefault("scene_box_from", "the dataset")
    elif scene.points is not None and scene.points.shape[0] >= MIN_POINTS_FOR_BOX:
        scene.scene_box = scene_box_from_points(scene.points)
        scene.metadata["scene_box_from"] = "point cloud (0.5%–99.5% quantiles)"
    else:
        scene.scene_box = scene_box_from_cameras(scene.cameras)
        scene.metadata["scene_box_from"] = "camera positions"


def dataset_from_scene(
    scene: ParsedScene,
    split: str = "train",
    downscale: float = 1.0,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    poses_only: bool = False,
) -> Dataset:
    """Cut ``split`` out of a parsed scene; check its files exist; downscale its cameras.

    ``poses_only``: the cameras alone — image and depth files are neither checked nor read
    (:class:`~nerfxl.data.images.PosesOnlyImages`; ``metadata["poses_only"]`` is True).
    """
    if split not in ALL_SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(ALL_SPLITS)}")
    try:
        downscale = float(downscale)
    except (TypeError, ValueError):
        raise ConfigError(f"downscale must be a positive number, got {downscale!r}") from None
    if not (math.isfinite(downscale) and downscale > 0):
        raise ConfigError(f"downscale must be a positive number, got {downscale!r}")
    if len(background) != 3:
        raise ConfigError(f"background must be 3 values (RGB in [0, 1]), got {list(background)!r}")
    indices = scene.indices(split)
    if not indices:
        why = scene.split_problems.get(split, "no frames are assigned to it")
        raise DataError(scene.source, f"the {split} split is empty ({why})")
    copy = None if poses_only else _prescaled_copy(scene, downscale)
    paths = [(scene.image_paths if copy is None else copy.paths)[i] for i in indices]
    if poses_only:
        return _poses_only_dataset(scene, split, indices, paths, downscale, background)
    for i, path in zip(indices, paths):
        if not path.is_file():
            raise DataError(path, f"image file is missing (frame '{scene.image_names[i]}' of {scene.source.name})")
    if scene.depth_paths is not None:
        for i in indices:
            if not scene.depth_paths[i].is_file():
                raise DataError(scene.depth_paths[i], f"depth file is missing (frame '{scene.image_names[i]}' "
                                                      f"of {scene.source.name})")

    index = torch.tensor(indices, dtype=torch.int64)
    cameras = scene.cameras[index]
    file_downscale = downscale  # how much larger the files read are than the cameras
    if copy is not None:
        # The copy's real sizes decide the intrinsics: tools round the downscaled sides their own way.
        cameras = fit_cameras_to_images(cameras, paths, "the full-size image's camera")
        file_downscale = 1.0
    elif downscale != 1.0:
        cameras = cameras.rescale(1.0 / downscale)
    sizes = list(zip(cameras.width.tolist(), cameras.height.tolist()))
    images = ImageSource(paths, sizes, downscale=file_downscale, background=background, cache_bytes=cache_bytes)
    depths = None
    if scene.depth_paths is not None:
        # Same byte bound as the images: a depth map costs 4 bytes per pixel, an RGBA image as much,
        # so the sampler's image pool fits the depth cache too.
        depths = DepthSource([scene.depth_paths[i] for i in indices], sizes, scale=scene.depth_scale,
                             cache_bytes=cache_bytes)
    metadata = dict(scene.metadata)
    metadata["frame_indices"] = indices
    metadata["camera_models"] = [scene.camera_model_names[i] for i in indices]
    if downscale != 1.0:
        metadata["downscale"] = float(downscale)
    if copy is not None:
        metadata["images_from"] = copy.folder.name
    return Dataset(
        cameras=cameras, images=images, split=split, scene_box=scene.scene_box.clone(), format=scene.format,
        root=scene.root, depths=depths, points=scene.points, point_colors=scene.point_colors,
        image_names=[scene.image_names[i] for i in indices], metadata=metadata,
    )


def _poses_only_dataset(scene: ParsedScene, split: str, indices: list[int], paths: list[Path], downscale: float,
                        background: Sequence[float]) -> Dataset:
    """A split's cameras with :class:`PosesOnlyImages` (no file is checked or read) and no depth."""
    cameras = scene.cameras[torch.tensor(indices, dtype=torch.int64)]
    if downscale != 1.0:
        cameras = cameras.rescale(1.0 / downscale)
    sizes = list(zip(cameras.width.tolist(), cameras.height.tolist()))
    metadata = dict(scene.metadata, frame_indices=indices, poses_only=True)
    return Dataset(
        cameras=cameras, images=PosesOnlyImages(paths, sizes, background=background, cache_bytes=0), split=split,
        scene_box=scene.scene_box.clone(), format=scene.format, root=scene.root, points=scene.points,
        point_colors=scene.point_colors, image_names=[scene.image_names[i] for i in indices], metadata=metadata,
    )


def _prescaled_copy(scene: ParsedScene, downscale: float) -> PrescaledImages | None:
    """The scene's copy of its images already downscaled by ``downscale`` (e.g. LLFF's images_4/), if any."""
    if not downscale.is_integer() or int(downscale) not in scene.prescaled:
        return None
    copy = scene.prescaled[int(downscale)]
    if len(copy.paths) != len(scene):
        raise DataError(copy.folder, f"holds {len(copy.paths)} images but {scene.source.name} describes "
                                     f"{len(scene)}; downscale {downscale:g} reads this folder, so the counts "
                                     f"must agree")
    return copy


def load_dataset(
    path: str | Path,
    split: str = "train",
    downscale: float = 1.0,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    format: str | None = None,
    poses_only: bool = False,
) -> Dataset:
    """Load one split of the dataset at ``path`` (a folder or a JSON file).

    Args:
        path: dataset folder, or its ``transforms*.json`` / ``coordinates.pt`` / COLMAP file.
        split: "train", "val", "test" or "all".
        downscale: images and intrinsics are divided by this factor (2 = half size), on the fly, or
            read from the dataset's own copy at that factor when it has one (LLFF's ``images_4/``).
        background: RGB in [0, 1] that images with alpha are composited onto.
        cache_bytes: bound of the decoded-image cache (and of the depth cache, if any).
        format: skip detection and use this format (one of nerfstudio, blender, colmap, mega-nerf,
            matrixcity, llff).
        poses_only: load the cameras only; image files need not exist and are never read (planning:
            ``nerfxl plan``). Reading an image of the result raises a DataError.
    Raises:
        DataError: missing/malformed files, naming the file and the problem.
        ConfigError: an unknown split, format or a non-positive downscale.
    """
    scene = parse_scene(path, format)
    return dataset_from_scene(scene, split, downscale, background, cache_bytes, poses_only)


def _counts(values) -> str:
    return ", ".join(f"{k} ×{n}" for k, n in Counter(values).most_common())


def describe_dataset(path: str | Path, format: str | None = None) -> str:
    """A multi-line human summary of the dataset at ``path`` (for ``nerfxl info DATA``)."""
    scene = parse_scene(path, format)
    cams = scene.cameras
    split_counts = ", ".join(f"{s} {len(scene.indices(s))}" for s in ("train", "val", "test"))
    box = scene.scene_box
    size = (box[1] - box[0]).tolist()
    fmt3 = lambda v: "(" + ", ".join(f"{x:.3g}" for x in v) + ")"  # noqa: E731
    lines = [
        f"format:        {scene.format}",
        f"source:        {scene.source}",
        f"frames:        {len(scene)} ({split_counts}); splits from {scene.metadata.get('splits_from', '?')}",
        f"resolutions:   {_counts(f'{w}x{h}' for w, h in zip(cams.width.tolist(), cams.height.tolist()))}",
        f"camera models: {_counts(scene.camera_model_names)}",
        f"scene box:     min {fmt3(box[0].tolist())} max {fmt3(box[1].tolist())} size {fmt3(size)}"
        f" [{scene.metadata.get('scene_box_from', '?')}]",
        f"points:        {scene.points.shape[0]} ({scene.point_source})" if scene.points is not None
        else "points:        none",
    ]
    if scene.depth_paths is not None:
        kinds = _counts(p.suffix.lower() or "(none)" for p in scene.depth_paths)
        lines.append(f"depth:         yes ({kinds}; × {scene.depth_scale:g} to scene units)")
    else:
        lines.append(f"depth:         {scene.metadata.get('depth', 'no')}")
    lines.append(f"world:         {scene.metadata.get('world', '?')}")
    missing = [p for p in scene.image_paths if not p.is_file()]
    if missing:
        lines.append(f"missing images: {len(missing)} (first: {missing[0]})")
    skip = {"splits_from", "world", "scene_box_from", "depth", "depth_unit_scale_factor"}
    for key, value in scene.metadata.items():
        if key not in skip:
            lines.append(f"{key + ':':<14} {value}")
    return "\n".join(lines)
