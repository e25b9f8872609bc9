"""Config (de)serialisation is strict: unknown keys and wrong types are named."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from nerfxl.configio import config_from_dict, config_to_dict, load_config_yaml, save_config_yaml
from nerfxl.errors import ConfigError


@dataclass
class Inner:
    kind: Literal["a", "b"] = "a"
    size: tuple[int, int, int] = (1, 2, 3)


@dataclass
class Outer:
    path: Optional[Path] = None
    rate: float = 0.1
    steps: int = 5
    inner: Inner = field(default_factory=Inner)


def test_round_trip(tmp_path):
    cfg = Outer(path=Path("x/y"), rate=2, inner=Inner("b", (4, 5, 6)))
    save_config_yaml(tmp_path / "c.yaml", cfg)
    assert load_config_yaml(tmp_path / "c.yaml", Outer) == Outer(Path("x/y"), 2.0, 5, Inner("b", (4, 5, 6)))


@pytest.mark.parametrize(
    "data, message",
    [
        ({"bogus": 1}, "unknown key"),
        ({"steps": "ten"}, "config.steps: expected an integer"),
        ({"inner": {"kind": "c"}}, "config.inner.kind"),
        ({"inner": {"size": [1, 2]}}, "expected 3 values"),
        ({"rate": True}, "expected a number"),
    ],
)
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(Outer, data)


def test_to_dict_plain_types():
    assert config_to_dict(Outer(path=Path("p")))["path"] == "p"
    assert config_to_dict(Outer())["inner"]["size"] == [1, 2, 3]


def test_bad_yaml_names_file(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("steps: [unclosed\n")
    with pytest.raises(ConfigError, match="config.yaml"):
        load_config_yaml(p, Outer)


def test_a_key_missing_from_an_older_file_keeps_its_old_meaning(tmp_path):
    from nerfxl.renderer import RenderConfig
    from nerfxl.run.config import TrainConfig

    assert TrainConfig().render.occupancy_cells_over == "scene"
    saved = config_to_dict(TrainConfig())
    del saved["render"]["occupancy_cells_over"]
    assert config_from_dict(TrainConfig, saved).render.occupancy_cells_over == "tile"
    # A file that names the key keeps what it names.
    assert config_from_dict(RenderConfig, {"occupancy_cells_over": "scene"}).occupancy_cells_over == "scene"
