"""The plan picture and the ``partition`` command (parsed by tyro as ``nerfxl`` will)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import tyro
from PIL import Image

from nerfxl.errors import ConfigError, DataError
from nerfxl.partition.cli import Partition
from nerfxl.partition.plan import TilePlan, plan_tiles
from nerfxl.partition.plot import plot_tiles

BOX = torch.tensor([[-10.0, -5.0, 0.0], [10.0, 5.0, 3.0]])


def is_png(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        return image.size


@pytest.mark.parametrize("k, method, with_points", [(4, "kd", True), (16, "kd", False), (8, "uniform", True)])
def test_plot_is_written(tmp_path, k, method, with_points):
    g = torch.Generator().manual_seed(0)
    pts = BOX[0] + torch.rand(3000, 3, generator=g) * (BOX[1] - BOX[0])
    plan = plan_tiles(pts, k, method, scene_box=BOX, nz=2 if method == "uniform" else 1)
    path = plot_tiles(plan, tmp_path / "plots" / "tiles.png", pts if with_points else None)
    width, height = is_png(path)
    assert width > 300 and height > 300
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiles.png"]


def test_partition_command_prints_the_table_and_writes_files(tiny_city, tmp_path, capsys):
    args = [str(tiny_city), "-k", "3", "--output", str(tmp_path / "plan.json"), "--plot", str(tmp_path / "tiles.png")]
    command = tyro.cli(Partition, args=args)
    assert command.k == 3 and command.method == "kd"
    command.main()
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["tile", "min", "(x,", "y,", "z)", "max", "(x,", "y,", "z)", "points", "share"]
    rows = [line.split() for line in lines[1:4]]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert all(r[-1].endswith("%") for r in rows)
    assert "imbalance" in out and "point cloud" in out
    plan = TilePlan.load(tmp_path / "plan.json")
    assert plan.k == 3 and plan.method == "kd"
    assert [int(r[-2]) for r in rows] == plan.points_per_tile.tolist()
    is_png(tmp_path / "tiles.png")


def test_partition_command_from_rays_uniform(tiny_city, tmp_path, capsys):
    args = [str(tiny_city), "-k", "4", "--method", "uniform", "--source", "rays", "--n-ray-samples", "5000",
            "--output", str(tmp_path / "plan.json")]
    tyro.cli(Partition, args=args).main()
    assert "ray samples" in capsys.readouterr().out
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["method"] == "uniform" and saved["grid_shape"] == [2, 2, 1]
    assert saved["source"]["kind"] == "ray samples" and sum(saved["points_per_tile"]) == 5000


def test_partition_command_errors(tiny_city, tmp_path):
    with pytest.raises(DataError, match="/definitely/not/here"):
        tyro.cli(Partition, args=["/definitely/not/here", "-k", "2"]).main()
    with pytest.raises(ConfigError, match="k must be"):
        tyro.cli(Partition, args=[str(tiny_city), "-k", "0"]).main()
    with pytest.raises(ConfigError, match="nz"):
        tyro.cli(Partition, args=[str(tiny_city), "-k", "3", "--method", "uniform", "--nz", "2"]).main()
    assert not any(tmp_path.iterdir())


def test_command_module_is_import_light():
    # ``nerfxl --help`` imports every command's module; this one must not drag torch in.
    code = "import sys, nerfxl.partition.cli; assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
