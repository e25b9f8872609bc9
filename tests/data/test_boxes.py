import torch

from nerfxl.data.boxes import intersect_rays_boxes, points_in_boxes

T_MAX = 12.0
STEPS = 6001
DT = T_MAX / (STEPS - 1)


def brute_force(origins, directions, boxes):
    """First/last inside sample along each ray, by dense sampling: [R, B] enter, exit, hit."""
    t = torch.linspace(0.0, T_MAX, STEPS, dtype=torch.float64)
    pts = origins[:, None, :] + t[None, :, None] * directions[:, None, :]  # [R, S, 3]
    inside = points_in_boxes(pts.reshape(-1, 3), boxes).reshape(len(origins), STEPS, -1)  # [R, S, B]
    hit = inside.any(dim=1)
    first = inside.float().argmax(dim=1)  # argmax returns the first maximum
    last = STEPS - 1 - inside.flip(1).float().argmax(dim=1)
    zero = torch.zeros((), dtype=torch.float64)
    return torch.where(hit, t[first], zero), torch.where(hit, t[last], zero), hit


def random_boxes(n, g):
    lo = torch.rand(n, 3, generator=g, dtype=torch.float64) * 4 - 2
    size = torch.rand(n, 3, generator=g, dtype=torch.float64) * 1.5 + 0.05
    return torch.stack([lo, lo + size], dim=1)


def test_slab_test_matches_dense_sampling_for_random_rays_and_boxes():
    g = torch.Generator().manual_seed(0)
    n_rays = 400
    origins = torch.rand(n_rays, 3, generator=g, dtype=torch.float64) * 6 - 3
    boxes = random_boxes(7, g)
    # Half the rays aim near a box so that hits are common, the others go anywhere.
    targets = boxes[torch.randint(0, 7, (n_rays,), generator=g)].mean(dim=1)
    aimed = targets + torch.randn(n_rays, 3, generator=g, dtype=torch.float64) * 0.5 - origins
    directions = torch.randn(n_rays, 3, generator=g, dtype=torch.float64)
    directions[::2] = aimed[::2]
    # Axis-parallel and axis-plane rays exercise the zero-component handling.
    directions[:40, 1:] = 0.0
    directions[40:80, 2] = 0.0
    directions = directions / directions.norm(dim=-1, keepdim=True)
    # Some origins exactly on a slab plane or inside a box.
    origins[80:90, 0] = boxes[0, 0, 0]
    origins[:20, 1:] = boxes[2, 0, 1:] + 0.3 * (boxes[2, 1, 1:] - boxes[2, 0, 1:])  # x-parallel rays through box 2
    origins[:10, 1] = boxes[2, 0, 1]  # … and some exactly on its y = ymin face (0 · ∞ in the slab test)
    origins[90:100] = boxes[1].mean(dim=0)

    t_enter, t_exit, hit = intersect_rays_boxes(origins, directions, boxes)
    bf_enter, bf_exit, bf_hit = brute_force(origins, directions, boxes)

    length = (t_exit - t_enter).clamp_max(T_MAX - t_enter)  # the part the samples can see
    visible = hit & (t_enter < T_MAX - 2 * DT) & (length > 2 * DT)
    # Every clearly visible analytic hit is seen by the samples, at the same distances.
    assert bf_hit[visible].all()
    assert (bf_enter[visible] - t_enter[visible]).abs().max() <= DT + 1e-9
    exit_seen = visible & (t_exit < T_MAX - DT)
    assert (bf_exit[exit_seen] - t_exit[exit_seen]).abs().max() <= DT + 1e-9
    # Every sampled hit is an analytic hit (grazing hits may shrink to a point but stay hits).
    assert hit[bf_hit].all()
    assert visible.sum() > 100 and (~hit).sum() > 100  # the test covers both outcomes
    # Origins inside a box enter it at t = 0; misses report zeros.
    assert (t_enter[90:100, 1] == 0).all() and hit[90:100, 1].all()
    assert (t_enter[~hit] == 0).all() and (t_exit[~hit] == 0).all()


def test_single_box_and_hand_cases():
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    origins = torch.tensor([[-3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-3.0, 2.0, 0.0]])
    directions = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    t_enter, t_exit, hit = intersect_rays_boxes(origins, directions, box)
    assert hit[:, 0].tolist() == [True, False, True, False]
    torch.testing.assert_close(t_enter[:, 0], torch.tensor([2.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(t_exit[:, 0], torch.tensor([4.0, 0.0, 0.5, 0.0]))  # t in units of |d| = 2


def test_a_ray_parallel_to_a_slab_a_tiny_distance_outside_it_misses():
    """Found by the property test: the slab z ∈ [2.2e-308, 1] does not hold a ray at z = 0 moving in y."""
    tiny = torch.finfo(torch.float64).tiny
    box = torch.tensor([[0.0, 1.0, tiny], [1.0, 2.0, 1.0]], dtype=torch.float64)
    o = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, tiny]], dtype=torch.float64)
    d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    t_enter, t_exit, hit = intersect_rays_boxes(o, d, box)
    assert hit[:, 0].tolist() == [False, True]  # z = tiny lies on the min face: inside (half-open)
    assert (t_enter[1, 0].item(), t_exit[1, 0].item()) == (1.0, 2.0)
