"""Objects followed over frames (vad.tracks): linking by box overlap, and values averaged along a track."""
import numpy as np

from vad.tracks import link_tracks, track_mean


def _walk(x0, y0, dx, frames, video=0, size=20):
    """One object's boxes moving dx pixels a frame: (video, frame, boxes)."""
    f = np.asarray(frames)
    x = x0 + dx * (f - f[0])
    return np.full(len(f), video), f, np.stack([x, np.full(len(f), y0), x + size, np.full(len(f), y0 + size)], 1)


def _cubes(*walks):
    v, f, b = (np.concatenate(parts) for parts in zip(*walks))
    return v, f, b.astype(np.float32)


def test_objects_are_followed_one_to_one_and_never_across_gaps_or_videos():
    v, f, b = _cubes(_walk(0, 0, 2, range(10)), _walk(0, 100, 2, range(10)),  # two objects side by side
                     _walk(60, 0, 2, [0, 1, 2, 5, 6]),  # a third missing on frames 3-4: two tracks
                     _walk(0, 0, 2, range(10), video=1))  # the first one's copy in another video
    track = link_tracks(v, f, b)
    assert len(np.unique(track[:10])) == 1 and len(np.unique(track[10:20])) == 1 and track[0] != track[10]
    assert len(np.unique(track[20:23])) == 1 and len(np.unique(track[23:25])) == 1 and track[20] != track[23]
    assert set(track[25:]).isdisjoint(track[:25])
    # a jump larger than the box (IoU < 0.3) starts a new track
    v, f, b = _cubes(_walk(0, 0, 30, range(3)))
    assert len(np.unique(link_tracks(v, f, b))) == 3


def test_crossing_objects_keep_their_tracks_and_input_order_does_not_matter():
    v, f, b = _cubes(_walk(0, 0, 3, range(12)), _walk(36, 4, -3, range(12)))  # they meet at frame 6
    track = link_tracks(v, f, b)
    shuffle = np.random.default_rng(0).permutation(len(v))
    again = link_tracks(v[shuffle], f[shuffle], b[shuffle])
    pairs = {(a, c) for a, c in zip(track[shuffle], again)}  # the same partition, whatever the ids
    assert len(pairs) == len(np.unique(track)) == len(np.unique(again))
    # each object keeps its own id up to the frame they meet (one to one: never two cubes of a frame in a track)
    assert len(np.unique(track[:6])) == 1 and len(np.unique(track[12:18])) == 1 and track[0] != track[12]
    for t in np.unique(track):
        assert len(np.unique(f[track == t])) == (track == t).sum()


def test_track_mean_damps_a_one_frame_spike_and_never_mixes_objects():
    v, f, b = _cubes(_walk(0, 0, 1, range(20)), _walk(0, 100, 1, range(20)))
    speed = np.r_[np.ones(20), np.full(20, 10.0)]
    speed[10] = 9.0  # one bad flow field of the slow object
    track = link_tracks(v, f, b)
    out = track_mean(speed, track, f, 4)
    np.testing.assert_allclose(out[20:], 10.0)  # the fast neighbour is untouched
    np.testing.assert_allclose(out[6:15], 1 + 8 / 9)  # the spike spread over the 9 frames around it
    np.testing.assert_allclose(out[:2], 1.0)
    assert out[19] == 1.0
    np.testing.assert_array_equal(track_mean(speed, track, f, 0), speed)
    # at a track's end the window holds fewer cubes: frame 14 sees frames 10-18, frame 16 sees 12-19
    assert np.isclose(out[16], 1.0) and np.isclose(out[14], 1 + 8 / 9)
