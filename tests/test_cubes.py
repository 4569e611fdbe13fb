import cv2
import numpy as np
import pytest

from vad.cubes import cube_energy, cube_offsets, extract_cubes, iter_windows
from vad.flow import DisFlow, FarnebackFlow, flow_pairs
from vad.scoring import motion_energy, window_energy


class ZeroFlow:
    def __call__(self, frames, pairs):
        return np.zeros((len(pairs), *frames.shape[1:3], 2), np.float32)


def _video(n=7, h=40, w=48):
    """Frame t is filled with the value 10*t, plus a gradient so crops are checkable."""
    base = np.add.outer(np.arange(h), np.arange(w)).astype(np.uint8)
    return np.stack([base + 10 * t for t in range(n)]).astype(np.uint8)


def test_offsets_and_pairs():
    assert cube_offsets(5).tolist() == [-2, -1, 0, 1, 2]
    with pytest.raises(ValueError):
        cube_offsets(4)
    assert flow_pairs(4) == [(0, 1), (1, 2), (2, 3), (2, 3)]
    assert flow_pairs(5, gap=2) == [(0, 2), (0, 2), (1, 3), (2, 4), (2, 4)]  # (t-1, t+1), shifted in at the ends
    assert flow_pairs(2, gap=2) == [(0, 1), (0, 1)]  # a video shorter than the gap: its whole length


def test_cube_frames_are_centred_and_padded_at_video_ends():
    video = _video()
    boxes = [np.zeros((0, 4), np.float32)] * 7
    boxes[0] = np.array([[4, 4, 36, 36]], np.float32)  # a 32x32 box: crop without resizing
    boxes[6] = np.array([[4, 4, 36, 36]], np.float32)
    boxes[3] = np.array([[4, 4, 36, 36], [10, 8, 26, 24]], np.float32)
    out = extract_cubes(video, boxes, ZeroFlow(), size=32)
    assert out["cubes"].shape == (4, 5, 32, 32) and out["flow"].shape == (4, 2, 32, 32)
    assert out["frame"].tolist() == [0, 3, 3, 6]
    crop = video[:, 4:36, 4:36]
    np.testing.assert_array_equal(out["cubes"][0], crop[[0, 0, 0, 1, 2]])  # start: first frame repeated
    np.testing.assert_array_equal(out["cubes"][1], crop[[1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(out["cubes"][3], crop[[4, 5, 6, 6, 6]])  # end: last frame repeated


def test_small_box_is_resized_like_cv2_bilinear():
    video = _video()
    boxes = [np.zeros((0, 4), np.float32)] * 7
    boxes[3] = np.array([[10, 8, 26, 24]], np.float32)
    out = extract_cubes(video, boxes, ZeroFlow(), size=32)
    expected = cv2.resize(video[3, 8:24, 10:26], (32, 32), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out["cubes"][0, 2].astype(int) - expected.astype(int)).max() <= 1


def test_flow_patch_is_the_middle_frame_flow():
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (64, 64)).astype(np.uint8), (7, 7), 0)
    video = np.stack([np.roll(bg, 2 * t, axis=1) for t in range(5)])  # shifts right 2 px per frame
    boxes = [np.array([[16, 16, 48, 48]], np.float32)] * 5
    for estimator, gap in ((DisFlow("medium"), 1), (DisFlow("medium", upscale=2.0), 1), (FarnebackFlow(), 1),
                           (DisFlow("medium"), 2)):  # gap 2: the flow over 2 frames, still in pixels per frame
        out = extract_cubes(video, boxes, estimator, size=32, flow_gap=gap)
        dx = out["flow"][:, 0, 8:24, 8:24].astype(np.float32).mean()
        dy = out["flow"][:, 1, 8:24, 8:24].astype(np.float32).mean()
        assert abs(dx - 2) < 0.5 and abs(dy) < 0.5


def test_energy_takes_the_wider_pair_only_where_the_object_moves_under_half_its_box():
    """A cube's motion energy comes from the flow over frames energy_gap apart where energy_gap times its own
    flow's energy stays under half its box's shorter side, else from its own flow."""
    own = np.zeros((3, 2, 4, 4), np.float16)
    own[:, 0] = np.array([1, 6, 1])[:, None, None]
    wide = np.zeros_like(own)
    wide[:, 0] = np.array([1.5, 0.5, 1.5])[:, None, None]
    boxes = np.array([[0, 0, 20, 20], [0, 0, 20, 20], [5, 5, 8, 30]], np.float32)  # 2 < 10, 12 > 10, 2 > 1.5
    np.testing.assert_allclose(cube_energy(own, wide, boxes, 2), [1.5, 6, 1])
    np.testing.assert_allclose(cube_energy(own, None, boxes, 2), [1, 6, 1])


def test_window_energy_takes_the_faster_of_two_merged_objects():
    """A box twice as wide as the window shape holds a fast object on its left half and a still one on its right:
    the box mean halves the fast one's speed, the window maximum keeps it; a box of the window's shape keeps its
    mean, a tall box is searched along its height, and aspect 0 is the box mean."""
    flow = np.zeros((3, 2, 32, 32), np.float16)
    flow[0, 0, :, :16] = 4  # left half moves 4 px a frame
    flow[1, 1] = 2  # all of it moves 2
    flow[2, 0, 16:, :] = 3  # bottom half moves 3
    boxes = np.array([[0, 0, 50, 50], [0, 0, 25, 50], [0, 0, 25, 100]], np.float32)  # shapes 1, 0.5, 0.25
    np.testing.assert_allclose(window_energy(flow, boxes, 0.5), [4, 2, 3])
    np.testing.assert_allclose(window_energy(flow, boxes, 0), motion_energy(flow))
    np.testing.assert_allclose(motion_energy(flow), [2, 2, 1.5])
    assert window_energy(flow[:0], boxes[:0], 0.5).shape == (0,)


def _moving_square(size, speed, h=120, w=240, n=9, seed=0):
    """A flat-shaded square crossing a still texture at ``speed`` px per frame, and its box in every frame."""
    bg = cv2.GaussianBlur(np.random.default_rng(seed).integers(60, 200, (h, w)).astype(np.uint8), (5, 5), 0)
    frames, boxes = [], []
    for t in range(n):
        f, x, y = bg.copy(), 20 + speed * t, h // 2 - size // 2
        cv2.rectangle(f, (x, y), (x + size - 1, y + size - 1), 230, -1)
        frames.append(f)
        boxes.append(np.array([[x, y, x + size, y + size]], np.float32))
    return np.stack(frames), boxes


def test_energy_of_the_wider_pair_measures_a_large_object_and_keeps_a_small_fast_one():
    """Real DIS flow: a large flat object moving 5 px a frame drags the one-frame flow of its interior towards
    zero, the two-frame pair measures it nearer its speed; a small object that jumps almost its size each frame is
    lost by the two-frame pair, so its cube keeps its own flow's energy."""
    frames, boxes = _moving_square(24, 5)
    one = extract_cubes(frames, boxes, DisFlow("medium"), size=32)
    two = extract_cubes(frames, boxes, DisFlow("medium"), size=32, energy_gap=2)
    np.testing.assert_array_equal(one["energy"], motion_energy(one["flow"]))  # no energy_gap: the cube's flow
    np.testing.assert_array_equal(one["flow"], two["flow"])  # the cube's flow does not change
    middle = slice(2, 7)
    assert np.abs(two["energy"][middle] - 5).mean() < np.abs(one["energy"][middle] - 5).mean() - 0.3
    frames, boxes = _moving_square(10, 9)
    one = extract_cubes(frames, boxes, DisFlow("medium"), size=32)
    two = extract_cubes(frames, boxes, DisFlow("medium"), size=32, energy_gap=2)
    np.testing.assert_array_equal(two["energy"][middle], one["energy"][middle])


def test_dis_min_side_enlarges_small_frames_only():
    """flow.min_side: frames whose shorter side is below it are enlarged to reach it (Ped2's 240 rows: x2), larger
    frames are left as they are; the vectors come back in frame pixels either way."""
    assert DisFlow(min_side=480).scale(240, 360) == 2.0 and DisFlow(min_side=480).scale(576, 768) == 1.0
    assert DisFlow(upscale=1.5, min_side=480).scale(576, 768) == 1.5
    rng = np.random.default_rng(1)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (64, 96)).astype(np.uint8), (7, 7), 0)
    video = np.stack([np.roll(bg, 2 * t, axis=1) for t in range(3)])
    pairs = [(0, 1), (1, 2)]
    np.testing.assert_array_equal(DisFlow(min_side=128)(video, pairs), DisFlow(upscale=2.0)(video, pairs))


def test_dis_workers_give_the_same_flow_to_the_bit():
    """DIS over several frame pairs at once (each thread its own instance, a contiguous share of the pairs) returns
    exactly the flow of one pair after the other, in the pairs' order, enlarged frames included."""
    from vad.flow import FlowError

    rng = np.random.default_rng(2)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (64, 96)).astype(np.uint8), (7, 7), 0)
    video = np.stack([np.roll(bg, t * t, axis=1) for t in range(6)])  # a different move for every pair
    pairs = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (3, 5), (0, 2)]
    for upscale in (1.0, 2.0):
        one = DisFlow(upscale=upscale)(video, pairs)
        assert not np.array_equal(one[0], one[1])
        for workers in (2, 3, 8):  # more workers than pairs: one pair each
            np.testing.assert_array_equal(DisFlow(upscale=upscale, workers=workers)(video, pairs), one)
    with pytest.raises(FlowError, match="at least one worker"):
        DisFlow(workers=0)


def test_video_without_boxes_gives_empty_arrays():
    out = extract_cubes(_video(), [np.zeros((0, 4), np.float32)] * 7, ZeroFlow())
    assert out["cubes"].shape == (0, 5, 32, 32) and out["frame"].shape == (0,)


def test_colour_cubes_keep_channels():
    video = np.stack([np.dstack([f] * 3) for f in _video()])
    boxes = [np.array([[4, 4, 36, 36]], np.float32)] * 7
    assert extract_cubes(video, boxes, ZeroFlow())["cubes"].shape == (7, 5, 3, 32, 32)


def test_raft_loads_local_weights_and_gives_frame_sized_flow(tmp_path):
    import torch
    from torchvision.models.optical_flow import raft_small

    from vad.flow import FlowError, RaftFlow, make_flow

    weights = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), weights)  # untrained, built locally: nothing is downloaded
    flow = RaftFlow(weights, small=True, iterations=2)(np.random.default_rng(0).integers(0, 255, (3, 60, 70), np.uint8),
                                                        [(0, 1), (1, 2)])
    assert flow.shape == (2, 60, 70, 2) and np.isfinite(flow).all()
    with pytest.raises(FlowError, match="not found"):
        make_flow("raft", raft_weights=str(tmp_path / "none.pth"))
    with pytest.raises(FlowError, match="does not hold RAFT-large"):
        RaftFlow(weights, small=False)
    with pytest.raises(FlowError, match="raft_weights"):
        make_flow("raft")


def test_windows_read_the_stream_only_as_far_as_the_chunk_and_its_margin():
    pulled = []

    def stream():
        for t in range(30):
            pulled.append(t)
            yield np.full((4, 4), t, np.uint8)

    spans = []
    for w in iter_windows(stream(), chunk=7, margin=2):
        assert len(pulled) == min(w.stop + 2, 30)  # never more than the margin past the chunk
        assert w.frames[:, 0, 0].tolist() == list(range(w.lo, w.hi))
        spans.append((w.lo, w.start, w.stop, w.hi))
    assert spans == [(0, 0, 7, 9), (5, 7, 14, 16), (12, 14, 21, 23), (19, 21, 28, 30), (26, 28, 30, 30)]
