"""Mega-NeRF fixtures built the way mega-nerf's scripts/colmap_to_mega_nerf.py builds them.

We start from an aerial capture in a COLMAP-style world (x right, y *down*, z forward: "RDF"), apply
that script's recipe (RDF→DRB similarity, recentring on ``origin_drb``, division by
``pose_scale_factor``, column shuffle to OpenGL camera axes), then check that our loader puts the
cameras and a projected ground point in a z-up metric world.
"""

import numpy as np
import pytest
import torch

from fixture_writers import ray_point_distance, write_image
from nerfxl.data.load import describe_dataset, detect_format, load_dataset
from nerfxl.data.rays import generate_rays
from nerfxl.errors import DataError

RDF_TO_DRB = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
W, H = 32, 24
FX, FY, CX, CY = 30.0, 31.0, 16.5, 11.5
SCALE = 50.0


def aerial_opencv_c2ws(n, seed=0):
    """OpenCV camera-to-world in an RDF world: cameras ~100 m up (y = −100), looking mostly down (+y)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        eye = np.array([rng.uniform(-80, 80), -100 + rng.uniform(-5, 5), rng.uniform(-80, 80)])
        forward = np.array([rng.uniform(-0.3, 0.3), 1.0, rng.uniform(-0.3, 0.3)])
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])  # any horizontal-ish right vector
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([right, down, forward], axis=1)
        c2w[:3, 3] = eye
        out.append(c2w)
    return out


def write_meganerf(root, n_train=6, n_val=2):
    c2ws = aerial_opencv_c2ws(n_train + n_val)
    drb = []
    for c2w in c2ws:
        m = np.concatenate([RDF_TO_DRB @ c2w[:3, :3] @ np.linalg.inv(RDF_TO_DRB), RDF_TO_DRB @ c2w[:3, 3:]], axis=1)
        drb.append(m)
    positions = np.stack([m[:, 3] for m in drb])
    origin = (positions.max(0) + positions.min(0)) * 0.5
    torch.save({"origin_drb": torch.tensor(origin, dtype=torch.float32), "pose_scale_factor": SCALE},
               root / "coordinates.pt")
    for i, m in enumerate(drb):
        split = "train" if i < n_train else "val"
        m = m.copy()
        m[:, 3] = (m[:, 3] - origin) / SCALE
        stored = np.concatenate([m[:, 1:2], -m[:, :1], m[:, 2:4]], axis=1)
        (root / split / "metadata").mkdir(parents=True, exist_ok=True)
        torch.save({"W": W, "H": H, "c2w": torch.tensor(stored, dtype=torch.float32),
                    "intrinsics": torch.tensor([FX, FY, CX, CY]), "distortion": torch.zeros(4)},
                   root / split / "metadata" / f"{i:06d}.pt")
        write_image(root / split / "rgbs" / f"{i:06d}.jpg", W, H, seed=i)
    return c2ws, origin


def to_ours(point_rdf, origin):
    """Where our loader must put a COLMAP-world point: z-up metres around origin_drb."""
    m = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
    return m @ (RDF_TO_DRB @ point_rdf - origin)


def test_splits_intrinsics_and_metric_z_up_positions(tmp_path):
    c2ws, origin = write_meganerf(tmp_path)
    assert detect_format(tmp_path) == "mega-nerf"
    train = load_dataset(tmp_path, "train")
    val = load_dataset(tmp_path, "val")
    test = load_dataset(tmp_path, "test")
    assert len(train) == 6 and len(val) == 2 and test.image_names == val.image_names == [
        "val/rgbs/000006.jpg", "val/rgbs/000007.jpg"]
    assert train.cameras.fx[0] == FX and train.cameras.fy[0] == FY
    assert train.cameras.cx[0] == CX and train.cameras.cy[0] == CY
    assert train.cameras.width[0] == W and train.cameras.height[0] == H
    all_ = load_dataset(tmp_path, "all")
    for i, c2w in enumerate(c2ws):
        expected = to_ours(c2w[:3, 3], origin)
        np.testing.assert_allclose(all_.cameras.positions[i].numpy(), expected, atol=1e-3)
        # The cameras fly ~100 m above the ground and look down.
        forward = -all_.cameras.camera_to_worlds[i, :, 2]
        assert forward[2] < -0.9
    ground_z = to_ours(np.array([0.0, 0.0, 0.0]), origin)[2]  # origin_drb is at the cameras' mean height
    assert abs(ground_z + 100) < 6 and all_.cameras.positions[:, 2].min() > ground_z + 90
    assert all_.metadata["pose_scale_factor"] == SCALE
    np.testing.assert_allclose(all_.metadata["origin_drb"], origin, rtol=1e-6)
    # The heuristic box reaches below the cameras, down past the ground plane.
    assert all_.scene_box[0, 2] < ground_z < all_.scene_box[1, 2]
    assert "mega-nerf" in describe_dataset(tmp_path)


def test_ground_point_projects_onto_its_ray(tmp_path):
    c2ws, origin = write_meganerf(tmp_path)
    ds = load_dataset(tmp_path, "all")
    rng = np.random.default_rng(1)
    hits = 0
    for i, c2w in enumerate(c2ws):
        for _ in range(20):
            ground = np.array([rng.uniform(-120, 120), 0.0, rng.uniform(-120, 120)])
            cam = np.linalg.inv(c2w)[:3] @ np.append(ground, 1.0)  # OpenCV camera: x right, y down, z fwd
            u, v = FX * cam[0] / cam[2] + CX, FY * cam[1] / cam[2] + CY
            if cam[2] <= 0 or not (0 <= u < W and 0 <= v < H):
                continue
            hits += 1
            ray = generate_rays(ds.cameras, torch.tensor([i]), torch.tensor([[u, v]], dtype=torch.float32))
            assert ray_point_distance(ray.origins[0].double(), ray.directions[0].double(),
                                      to_ours(ground, origin)) < 2e-2  # metres, float32 poses ~100 m away
    assert hits > 10


# ---------------------------------------------------------------------------------------- bad input


def error_of(path, split="all") -> str:
    with pytest.raises(DataError) as info:
        load_dataset(path, split)
    return str(info.value)


def test_corrupt_and_unsafe_pt_files(tmp_path):
    write_meganerf(tmp_path)
    (tmp_path / "train" / "metadata" / "000002.pt").write_bytes(b"garbage")
    msg = error_of(tmp_path)
    assert "000002.pt" in msg and "torch.load" in msg
    write_meganerf(tmp_path)
    torch.save({"W": W, "H": H, "c2w": torch.eye(4)[:3], "intrinsics": torch.ones(4), "extra": UnsafeThing()},
               tmp_path / "train" / "metadata" / "000003.pt")
    msg = error_of(tmp_path)
    assert "000003.pt" in msg and "weights_only" in msg


class UnsafeThing:
    """Not loadable with weights_only=True: arbitrary pickled classes are refused."""


def test_bad_metadata_values(tmp_path):
    write_meganerf(tmp_path)
    path = tmp_path / "val" / "metadata" / "000007.pt"
    bad = torch.eye(4)[:3].clone()
    bad[0, 3] = float("inf")
    torch.save({"W": W, "H": H, "c2w": bad, "intrinsics": torch.ones(4)}, path)
    assert "000007.pt" in error_of(tmp_path) and "non-finite" in error_of(tmp_path)
    torch.save({"W": W, "H": H, "c2w": torch.eye(4)[:2]}, path)
    assert "000007.pt" in error_of(tmp_path) and "intrinsics" in error_of(tmp_path)
    torch.save({"W": W, "H": H, "c2w": torch.eye(4)[:2], "intrinsics": torch.ones(4)}, path)
    assert "000007.pt" in error_of(tmp_path) and "3×4" in error_of(tmp_path)


def test_missing_image_coordinates_and_empty_split(tmp_path):
    write_meganerf(tmp_path)
    (tmp_path / "train" / "rgbs" / "000001.jpg").unlink()
    msg = error_of(tmp_path)
    assert "000001" in msg and "missing" in msg
    (tmp_path / "train" / "rgbs" / "000001.jpg").write_bytes(b"")
    for p in (tmp_path / "val" / "metadata").iterdir():
        p.unlink()
    msg = error_of(tmp_path, "test")
    assert "coordinates.pt" in msg and "test split is empty" in msg
    torch.save({"origin_drb": torch.zeros(3)}, tmp_path / "coordinates.pt")
    msg = error_of(tmp_path)
    assert "coordinates.pt" in msg and "pose_scale_factor" in msg
