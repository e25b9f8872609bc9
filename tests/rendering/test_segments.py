import pytest
import torch

from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.rendering import (
    composite_segments,
    march_rays_in_box,
    render_segments,
    segment_order_from_entry,
)

F64 = dict(dtype=torch.float64)
TIGHT = dict(rtol=1e-11, atol=1e-12)


def one_sample_segment(alpha, mid, delta, colour):
    """Segment row of a single sample with opacity ``alpha`` (worked out by hand)."""
    return [alpha * c for c in colour] + [alpha, alpha * mid, alpha**2 * delta / 3.0]


def test_two_segments_by_hand():
    # Sample 1: α = 0.4 at t = 1.0 (δ = 0.2), red; sample 2: α = 0.5 at t = 2.5 (δ = 0.1).
    # One pass: w1 = 0.4, w2 = 0.6·0.5 = 0.3, L = 2·w1·w2·1.5 + (w1²·0.2 + w2²·0.1)/3.
    segments = torch.tensor(
        [[one_sample_segment(0.4, 1.0, 0.2, [1.0, 0.0, 0.0]), one_sample_segment(0.5, 2.5, 0.1, [0.0, 1.0, 0.5])]],
        **F64,
    )
    out = composite_segments(segments)
    torch.testing.assert_close(out.rgb, torch.tensor([[0.4, 0.3, 0.15]], **F64))
    torch.testing.assert_close(out.opacity, torch.tensor([0.7], **F64))
    torch.testing.assert_close(out.depth, torch.tensor([1.15], **F64))
    torch.testing.assert_close(out.distortion, torch.tensor([0.37366666666666665], **F64))
    # Same segments in swapped slots with an explicit order give the same answer.
    swapped = composite_segments(segments.flip(1), order=torch.tensor([[1, 0]]))
    torch.testing.assert_close(swapped.distortion, out.distortion)


def test_render_segments_matches_reference(ref):
    g = torch.Generator().manual_seed(10)
    n_rays = 30
    t_starts, t_ends, sigmas, rgbs, ray_indices = ref.random_packed_rays(n_rays, 10, g)
    expected = ref.render(t_starts, t_ends, sigmas, rgbs, ray_indices, n_rays)
    out = render_segments(t_starts, t_ends, sigmas, rgbs, ray_indices, n_rays)
    assert out.shape == (n_rays, 6)
    torch.testing.assert_close(out[:, :3], expected.rgb, **TIGHT)
    torch.testing.assert_close(out[:, 3], expected.opacity, **TIGHT)
    torch.testing.assert_close(out[:, 4], expected.depth, **TIGHT)
    torch.testing.assert_close(out[:, 5], expected.distortion, **TIGHT)
    empty_rays = torch.bincount(ray_indices, minlength=n_rays) == 0
    assert empty_rays.any() and not out[empty_rays].any()


def test_render_segments_without_samples_is_the_identity():
    empty = torch.zeros(0, **F64)
    out = render_segments(empty, empty, empty, torch.zeros(0, 3, **F64), torch.zeros(0, dtype=torch.long), 3)
    assert out.shape == (3, 6) and not out.any()


def cut_into_segments(t_starts, t_ends, sigmas, rgbs, ray_indices, n_rays, n_slots, generator):
    """Cut every ray at random places into ``n_slots`` pieces (some empty), render each piece as a
    segment and store piece p of ray r in slot perm[r, p]. Returns segments and the order."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts
    positions = torch.arange(ray_indices.numel()) - first[ray_indices]
    cuts = (torch.rand(n_rays, n_slots - 1, generator=generator, **F64) * (counts[:, None] + 1)).long()
    cuts = torch.sort(cuts, dim=1)[0]
    piece = (positions[:, None] >= cuts[ray_indices]).sum(dim=1)
    per_piece = []
    for p in range(n_slots):
        m = piece == p
        per_piece.append(render_segments(t_starts[m], t_ends[m], sigmas[m], rgbs[m], ray_indices[m], n_rays))
    stacked = torch.stack(per_piece, dim=1)  # [R, pieces, 6] front to back
    perm = torch.stack([torch.randperm(n_slots, generator=generator) for _ in range(n_rays)])
    segments = torch.zeros_like(stacked).scatter(1, perm[..., None].expand(-1, -1, 6), stacked)
    return segments, perm


@pytest.mark.parametrize("n_slots,seed", [(1, 0), (2, 1), (5, 2), (5, 3)])
def test_composite_equals_one_pass_rendering_values_and_gradients(ref, n_slots, seed):
    g = torch.Generator().manual_seed(seed)
    n_rays = 50
    t_starts, t_ends, sigmas, rgbs, ray_indices = ref.random_packed_rays(n_rays, 14, g)
    leaves = [x.clone().requires_grad_() for x in (t_starts, t_ends, sigmas, rgbs)]
    probes = [torch.randn(n_rays, 3, generator=g, **F64)] + [torch.randn(n_rays, generator=g, **F64) for _ in range(3)]

    def loss(out):
        return sum((p * x).sum() for p, x in zip(probes, (out.rgb, out.opacity, out.depth, out.distortion)))

    segments, order = cut_into_segments(*leaves, ray_indices, n_rays, n_slots, g)
    if n_slots > 1:  # the cuts really produced empty segments, which must act as the identity
        assert (segments[..., 3] == 0).any()
    split = composite_segments(segments, order=order)
    split_grads = torch.autograd.grad(loss(split), leaves)

    whole = composite_segments(render_segments(*leaves, ray_indices, n_rays)[:, None, :])
    whole_grads = torch.autograd.grad(loss(whole), leaves)

    for name in ("rgb", "opacity", "depth", "distortion"):
        torch.testing.assert_close(getattr(split, name), getattr(whole, name), **TIGHT)
    for a, b in zip(split_grads, whole_grads):
        torch.testing.assert_close(a, b, **TIGHT)
    expected = ref.render(t_starts, t_ends, sigmas, rgbs, ray_indices, n_rays)
    torch.testing.assert_close(split.distortion, expected.distortion, **TIGHT)


def test_single_segment_is_the_identity():
    g = torch.Generator().manual_seed(5)
    segments = torch.rand(7, 1, 6, generator=g, **F64)
    out = composite_segments(segments)
    assert torch.equal(out.rgb, segments[:, 0, :3])
    assert torch.equal(out.opacity, segments[:, 0, 3])
    assert torch.equal(out.depth, segments[:, 0, 4])
    assert torch.equal(out.distortion, segments[:, 0, 5])


def test_background_fills_the_remaining_transparency():
    g = torch.Generator().manual_seed(6)
    segments = torch.rand(4, 3, 6, generator=g, **F64)
    plain = composite_segments(segments)
    background = torch.tensor([0.2, 0.5, 1.0], **F64)
    torch.testing.assert_close(
        composite_segments(segments, background=background).rgb,
        plain.rgb + (1.0 - plain.opacity)[:, None] * background,
    )
    per_ray = torch.rand(4, 3, generator=g, **F64)
    torch.testing.assert_close(
        composite_segments(segments, background=per_ray).rgb, plain.rgb + (1.0 - plain.opacity)[:, None] * per_ray
    )
    # Opacity equals 1 − Π(1 − A_k), so a fully opaque ray shows no background.
    torch.testing.assert_close(plain.opacity, 1.0 - torch.prod(1.0 - segments[..., 3], dim=1))


def test_composite_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(7)
    segments = torch.rand(4, 3, 6, generator=g, **F64)
    segments[1, 0, 3] = 1.0  # an opaque front segment: everything behind it gets P = 0
    segments.requires_grad_()
    order = torch.stack([torch.randperm(3, generator=g) for _ in range(4)])
    order[1] = torch.tensor([0, 2, 1])  # the opaque segment in front of two others
    background = torch.rand(3, generator=g, **F64, requires_grad=True)

    def fn(s, bg):
        out = composite_segments(s, order=order, background=bg)
        return out.rgb, out.opacity, out.depth, out.distortion

    assert torch.autograd.gradcheck(fn, (segments, background))


def test_composite_rejects_bad_shapes():
    with pytest.raises(ValueError):
        composite_segments(torch.zeros(3, 2, 5))
    with pytest.raises(ValueError):
        composite_segments(torch.zeros(3, 2, 6), order=torch.zeros(3, 3, dtype=torch.long))


def test_segment_order_from_entry():
    t_enter = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, 5.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    hit = torch.tensor([[True, True, True, False], [False, True, True, True], [False, False, False, False]])
    order = segment_order_from_entry(t_enter, hit)
    assert order.dtype == torch.long
    assert order.tolist() == [[1, 2, 0, 3], [3, 1, 2, 0], [0, 1, 2, 3]]


def test_tiles_marched_separately_composite_like_one_pass():
    """End to end: march each of 4 tile boxes, render, order by entry, composite; the result
    equals one-pass rendering of all tiles' samples merged along each ray."""
    g = torch.Generator().manual_seed(8)
    boxes = torch.tensor(
        [[[x0, y0, 0.0], [x0 + 0.5, y0 + 0.5, 1.0]] for x0 in (0.0, 0.5) for y0 in (0.0, 0.5)], **F64
    )
    n_rays = 200
    origins = torch.rand(n_rays, 3, generator=g, **F64) * 4.0 - 1.5
    directions = torch.rand(n_rays, 3, generator=g, **F64) - origins  # towards the unit cube

    def field(positions):
        sigma = 6.0 * torch.exp(-8.0 * ((positions - 0.5) ** 2).sum(-1))
        return sigma, torch.sigmoid(3.0 * positions)

    segments, parts = [], []
    for box in boxes:
        samples = march_rays_in_box(origins, directions, box, 0.05, stratified=True, generator=g)
        mids = 0.5 * (samples.t_starts + samples.t_ends)
        sigmas, rgbs = field(origins[samples.ray_indices] + directions[samples.ray_indices] * mids[:, None])
        segments.append(render_segments(samples.t_starts, samples.t_ends, sigmas, rgbs, samples.ray_indices, n_rays))
        parts.append((samples.ray_indices, samples.t_starts, samples.t_ends, sigmas, rgbs))
    t_enter, _, hit = intersect_rays_boxes(origins, directions, boxes)
    assert (hit.sum(1) >= 2).sum() > 20  # many rays really cross several tiles
    split = composite_segments(torch.stack(segments, dim=1), order=segment_order_from_entry(t_enter, hit))

    ray_indices, t_starts, t_ends, sigmas, rgbs = (torch.cat(x) for x in zip(*parts))
    merged = torch.argsort(ray_indices.double() * 1e3 + t_starts)
    whole = render_segments(
        t_starts[merged], t_ends[merged], sigmas[merged], rgbs[merged], ray_indices[merged], n_rays
    )
    torch.testing.assert_close(split.rgb, whole[:, :3], **TIGHT)
    torch.testing.assert_close(split.opacity, whole[:, 3], **TIGHT)
    torch.testing.assert_close(split.depth, whole[:, 4], **TIGHT)
    torch.testing.assert_close(split.distortion, whole[:, 5], **TIGHT)
