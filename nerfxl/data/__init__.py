"""Cameras, rays, datasets and scenes: everything a model is trained from."""

from nerfxl.data.boxes import intersect_rays_boxes, points_in_boxes
from nerfxl.data.cameras import CameraModel, Cameras
from nerfxl.data.dataset import Dataset
from nerfxl.data.load import describe_dataset, detect_format, load_dataset
from nerfxl.data.rays import RayBundle, generate_image_rays, generate_rays
from nerfxl.data.sampler import RayBatch, RayBatchSampler
from nerfxl.data.transform import SceneTransform

__all__ = [
    "CameraModel",
    "Cameras",
    "Dataset",
    "RayBatch",
    "RayBatchSampler",
    "RayBundle",
    "SceneTransform",
    "describe_dataset",
    "detect_format",
    "generate_image_rays",
    "generate_rays",
    "intersect_rays_boxes",
    "load_dataset",
    "points_in_boxes",
]
