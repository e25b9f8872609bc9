import pytest
import torch

from nerfxl.fields import Background, ColourDecoder, SkyModel


def _dirs(n):
    return torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)


@pytest.mark.parametrize("encoding", ["sh", "frequency"])
def test_decoder_shapes_range_and_appearance(encoding):
    dec = ColourDecoder(27, appearance_dim=4, direction_encoding=encoding, width=32, depth=3)
    f, d = torch.randn(9, 27), _dirs(9)
    rgb = dec(f, d, torch.zeros(9, 4))
    assert rgb.shape == (9, 3) and rgb.dtype == torch.float32
    assert ((rgb > 0) & (rgb < 1)).all()
    torch.testing.assert_close(dec(f, d, None), rgb)  # None = zero embedding
    assert not torch.allclose(dec(f, d, torch.ones(9, 4)), rgb)
    expected_in = 27 * 5 + (16 if encoding == "sh" else 27) + 4
    assert dec.in_dim == expected_in
    assert sum(isinstance(m, torch.nn.Linear) for m in dec.modules()) == 4


def test_decoder_without_appearance_and_without_feature_encoding():
    dec = ColourDecoder(8, appearance_dim=0, feature_frequencies=0, width=16, depth=0)
    assert dec.in_dim == 8 + 16
    rgb = dec(torch.randn(5, 8, requires_grad=True), _dirs(5))
    rgb.sum().backward()
    assert dec.mlp[0].weight.grad is not None


def test_sky_model():
    sky = SkyModel(appearance_dim=2, width=16, depth=1)
    rgb = sky(_dirs(7))
    assert rgb.shape == (7, 3) and ((rgb > 0) & (rgb < 1)).all()
    rgb.sum().backward()
    assert all(p.grad is not None for p in sky.parameters())


def test_background_kinds():
    d = _dirs(6)
    assert torch.equal(Background("white")(d), torch.ones(6, 3))
    assert torch.equal(Background("black")(d), torch.zeros(6, 3))
    rnd = Background("random", eval_colour=(0.2, 0.3, 0.4))
    assert rnd.is_random
    a = rnd(d, generator=torch.Generator().manual_seed(1))
    b = rnd(d, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (6, 3) and ((a >= 0) & (a <= 1)).all()
    rnd.eval()
    assert not rnd.is_random
    torch.testing.assert_close(rnd(d), torch.tensor([0.2, 0.3, 0.4]).expand(6, 3))
    learned = Background("learned")
    out = learned(d)
    torch.testing.assert_close(out, torch.full((6, 3), 0.5))
    out.sum().backward()
    assert learned.colour_logits.grad is not None
    sky = Background("sky", SkyModel(width=8, depth=1))
    assert sky(d).shape == (6, 3) and len(list(sky.parameters())) > 0
    assert list(Background("white").parameters()) == []
    with pytest.raises(ValueError):
        Background("sky")
    with pytest.raises(ValueError):
        Background("grey")  # type: ignore[arg-type]
