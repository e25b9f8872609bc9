"""Property tests (hypothesis) for segment rendering and compositing: for random samples, cutting
each ray at arbitrary places into K segments (empty ones included), rendering them with
``render_segments`` and compositing reproduces single-pass rendering of all samples (colour,
opacity, depth numerator, distortion; checked against ``render_segments`` on the whole ray and a
textbook float64 reference); the result does not depend on which slot holds which segment once
``order`` (e.g. from ``segment_order_from_entry``) says front to back; opacity stays in [0, 1]
as 1 − Π(1 − A_k); an all-zero segment is neutral wherever it is inserted.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nerfxl.rendering import composite_segments, render_segments, segment_order_from_entry

# database=None: no failing examples replayed from earlier runs; deadline=None: first calls are slow.
SETTINGS = settings(max_examples=50, deadline=None, database=None)
F64 = dict(dtype=torch.float64)
CLOSE = dict(rtol=1e-10, atol=1e-12)


@st.composite
def rays(draw, max_rays=3, max_samples=8):
    """Per ray, a list of samples (t_start, t_end, sigma, rgb) with sorted, non-overlapping
    intervals, sometimes touching, sometimes with gaps; densities from exactly 0 to opaque."""
    out = []
    for _ in range(draw(st.integers(1, max_rays))):
        t = draw(st.floats(0.0, 5.0))
        samples = []
        for _ in range(draw(st.integers(0, max_samples))):
            t += draw(st.one_of(st.just(0.0), st.floats(0.0, 0.5)))
            delta = draw(st.floats(1e-3, 0.5))
            sigma = draw(st.one_of(st.just(0.0), st.floats(0.0, 5.0), st.floats(5.0, 200.0)))
            rgb = [draw(st.floats(0.0, 1.0)) for _ in range(3)]
            samples.append((t, t + delta, sigma, rgb))
            t += delta
        out.append(samples)
    return out


@st.composite
def cuts(draw, ray_samples, k):
    """Per ray, K − 1 sorted cut indices into its samples (repeats make empty segments)."""
    return [sorted(draw(st.lists(st.integers(0, len(s)), min_size=k - 1, max_size=k - 1))) for s in ray_samples]


def pieces(ray_samples, ray_cuts):
    """Per ray, its K contiguous sample lists."""
    out = []
    for samples, c in zip(ray_samples, ray_cuts):
        bounds = [0, *c, len(samples)]
        out.append([samples[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
    return out


def render(per_ray):
    """``render_segments`` of the given per-ray sample lists, packed sorted by ray then t: [R, 6]."""
    flat = [(r, s) for r, samples in enumerate(per_ray) for s in samples]
    n = len(flat)
    t_starts = torch.tensor([s[0] for _, s in flat], **F64).reshape(n)
    t_ends = torch.tensor([s[1] for _, s in flat], **F64).reshape(n)
    sigmas = torch.tensor([s[2] for _, s in flat], **F64).reshape(n)
    rgbs = torch.tensor([s[3] for _, s in flat], **F64).reshape(n, 3)
    ray_indices = torch.tensor([r for r, _ in flat], dtype=torch.int64).reshape(n)
    return render_segments(t_starts, t_ends, sigmas, rgbs, ray_indices, len(per_ray))


def render_pieces(per_ray_pieces):
    """[R, K, 6]: slot k of ray r is the segment of that ray's k-th piece."""
    k = len(per_ray_pieces[0])
    return torch.stack([render([p[slot] for p in per_ray_pieces]) for slot in range(k)], dim=1)


def reference(ray_samples):
    """Textbook single pass in plain Python floats: [R, 6] (premultiplied rgb, Σ w, Σ w t_mid,
    Σ_ij w_i w_j |m_i − m_j| + Σ_i w_i² δ_i / 3)."""
    rows = []
    for samples in ray_samples:
        depth_so_far, weights, mids = 0.0, [], []
        rgb = [0.0, 0.0, 0.0]
        for t0, t1, sigma, colour in samples:
            w = math.exp(-depth_so_far) * (1.0 - math.exp(-sigma * (t1 - t0)))
            depth_so_far += sigma * (t1 - t0)
            weights.append(w)
            mids.append(0.5 * (t0 + t1))
            rgb = [c + w * x for c, x in zip(rgb, colour)]
        distortion = sum(wi * wj * abs(mi - mj) for wi, mi in zip(weights, mids) for wj, mj in zip(weights, mids))
        distortion += sum(w * w * (s[1] - s[0]) / 3.0 for w, s in zip(weights, samples))
        rows.append(rgb + [sum(weights), sum(w * m for w, m in zip(weights, mids)), distortion])
    return torch.tensor(rows, **F64)


def as_rows(out):
    return torch.cat([out.rgb, out.opacity[:, None], out.depth[:, None], out.distortion[:, None]], dim=-1)


@SETTINGS
@given(st.data(), rays(), st.integers(1, 5))
def test_compositing_any_split_equals_one_pass(data, ray_samples, k):
    ray_cuts = data.draw(cuts(ray_samples, k))
    whole = render(ray_samples)
    # render_segments on the whole ray is the textbook single pass …
    torch.testing.assert_close(whole, reference(ray_samples), **CLOSE)
    # … and so is compositing the pieces front to back (order=None: slots already front to back).
    segments = render_pieces(pieces(ray_samples, ray_cuts))
    torch.testing.assert_close(as_rows(composite_segments(segments)), whole, **CLOSE)


@SETTINGS
@given(st.data(), rays(), st.integers(2, 5))
def test_compositing_ignores_slot_placement_given_the_entry_order(data, ray_samples, k):
    ray_cuts = data.draw(cuts(ray_samples, k))
    per_ray = pieces(ray_samples, ray_cuts)
    # Scatter each ray's pieces into random slots, as tiles hold segments in tile order, not ray order.
    perms = [data.draw(st.permutations(range(k))) for _ in per_ray]
    shuffled = [[p[perm.index(slot)] for slot in range(k)] for p, perm in zip(per_ray, perms)]
    segments = render_pieces(shuffled)
    # Entry distance of each slot = start of its first sample (strictly increasing along the ray).
    # Empty pieces are tiles the ray misses or crosses without samples: either way they are neutral.
    t_enter = torch.zeros(len(per_ray), k, **F64)
    hit = torch.zeros(len(per_ray), k, dtype=torch.bool)
    for r, ray_pieces in enumerate(shuffled):
        for slot, piece in enumerate(ray_pieces):
            if piece:
                t_enter[r, slot], hit[r, slot] = piece[0][0], True
            else:
                t_enter[r, slot], hit[r, slot] = data.draw(st.floats(0.0, 10.0)), data.draw(st.booleans())
    order = segment_order_from_entry(t_enter, hit)
    torch.testing.assert_close(as_rows(composite_segments(segments, order=order)), render(ray_samples), **CLOSE)
    # The scattering itself (piece i sits in slot perms[r][i]) is an order too, whatever it does
    # with the empty pieces.
    scatter = torch.tensor(perms, dtype=torch.int64).reshape(len(per_ray), k)
    torch.testing.assert_close(as_rows(composite_segments(segments, order=scatter)), render(ray_samples), **CLOSE)


@SETTINGS
@given(
    st.integers(1, 4).flatmap(lambda k: st.tuples(
        st.lists(st.lists(st.integers(0, 3).map(float), min_size=k, max_size=k), min_size=1, max_size=4),
        st.lists(st.lists(st.booleans(), min_size=k, max_size=k), min_size=1, max_size=4),
    ))
)
def test_segment_order_is_hits_by_entry_then_misses(entries_and_hits):
    # Small integer entries make ties common; the documented tie-break is slot order.
    entries, hits = entries_and_hits
    n = min(len(entries), len(hits))
    t_enter = torch.tensor(entries[:n], **F64)
    hit = torch.tensor(hits[:n], dtype=torch.bool)
    order = segment_order_from_entry(t_enter, hit)
    assert order.dtype == torch.int64
    for r in range(n):
        k = len(entries[r])
        expected = sorted((s for s in range(k) if hits[r][s]), key=lambda s: (entries[r][s], s))
        expected += [s for s in range(k) if not hits[r][s]]
        assert order[r].tolist() == expected


@SETTINGS
@given(
    st.integers(1, 5).flatmap(lambda k: st.lists(
        st.lists(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)), min_size=k, max_size=k),
        min_size=1, max_size=4,
    )),
    st.integers(0, 2**31 - 1),
)
def test_opacity_is_one_minus_product_of_transparencies(opacities, seed):
    # Any segments with A_k in [0, 1] (exact 0 and 1 included): A = 1 − Π(1 − A_k) ∈ [0, 1].
    a = torch.tensor(opacities, **F64)
    g = torch.Generator().manual_seed(seed)
    segments = torch.rand(*a.shape, 6, generator=g, **F64)
    segments[..., 3] = a
    out = composite_segments(segments)
    # Σ P_k A_k may round an ulp or two past 1 (e.g. A = (0.28, 0.984375, 1)): allow 1e-15, no more.
    assert bool(((out.opacity >= 0) & (out.opacity <= 1 + 1e-15)).all())
    torch.testing.assert_close(out.opacity, 1 - (1 - a).prod(dim=1), **CLOSE)
    assert bool((out.opacity >= a.amax(dim=1) - 1e-15).all())


@SETTINGS
@given(st.data(), rays(), st.integers(1, 5))
def test_rendered_pieces_composite_to_physical_values(data, ray_samples, k):
    segments = render_pieces(pieces(ray_samples, data.draw(cuts(ray_samples, k))))
    out = composite_segments(segments)
    # A segment's opacity is the float sum Σ w of its weights: at saturated σ (weights summing to 1)
    # it may pass 1 by a few ulps, as may the composite built from it.
    assert bool(((segments[..., 3] >= 0) & (segments[..., 3] <= 1 + 1e-12)).all())
    assert bool(((out.opacity >= 0) & (out.opacity <= 1 + 1e-12)).all())
    # Premultiplied colours of [0, 1] samples lie in [0, A]; the expected depth D / A lies within
    # the ray's samples.
    assert bool(((out.rgb >= 0) & (out.rgb <= out.opacity[:, None] + 1e-12)).all())
    for r, samples in enumerate(ray_samples):
        if float(out.opacity[r]) > 1e-9:
            depth = float(out.depth[r] / out.opacity[r])
            assert samples[0][0] - 1e-9 <= depth <= samples[-1][1] + 1e-9


@SETTINGS
@given(st.data(), rays(), st.integers(1, 4))
def test_an_all_zero_segment_is_neutral_anywhere(data, ray_samples, k):
    segments = render_pieces(pieces(ray_samples, data.draw(cuts(ray_samples, k))))
    expected = as_rows(composite_segments(segments))
    where = data.draw(st.integers(0, k))
    zero = torch.zeros(len(ray_samples), 1, 6, **F64)
    padded = torch.cat([segments[:, :where], zero, segments[:, where:]], dim=1)
    torch.testing.assert_close(as_rows(composite_segments(padded)), expected, **CLOSE)
    if k == 1:
        # Documented: a single segment comes back unchanged.
        assert torch.equal(expected, segments[:, 0])
