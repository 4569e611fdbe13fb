import h5py
import numpy as np

from vad.cache import CubeCache, CubeDataset, settings_key


def _arrays(n):
    return {"cubes": np.full((n, 5, 32, 32), 7, np.uint8), "flow": np.zeros((n, 2, 32, 32), np.float16),
            "energy": np.zeros(n, np.float32), "boxes": np.zeros((n, 4), np.float32),
            "frame": np.arange(n, dtype=np.int32)}


def test_key_depends_on_settings_only():
    assert settings_key({"a": 1, "b": [1, 2]}) == settings_key({"b": [1, 2], "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})


def test_write_load_and_lazy_dataset(tmp_path):
    cache = CubeCache(tmp_path, {"x": 1})
    cache.write("v1", _arrays(3), n_frames=10)
    cache.write("v2", _arrays(2), n_frames=4)
    loaded = cache.load(["v1", "v2"])
    assert loaded["frame"].tolist() == [0, 1, 2, 0, 1] and loaded["video"].tolist() == [0, 0, 0, 1, 1]
    ds = CubeDataset(cache, ["v1", "v2"])
    assert len(ds) == 5 and ds[4]["cubes"].shape == (5, 32, 32) and int(ds[4]["cubes"][0, 0, 0]) == 7


def test_resume_after_interrupted_run(tmp_path):
    settings = {"regions": "motion"}
    cache = CubeCache(tmp_path, settings)
    cache.write("v1", _arrays(3), n_frames=3)
    # an interrupted write leaves only a temporary file, never a half-written video
    with h5py.File(cache.path("v2").with_name("v2.h5.tmp"), "w") as f:
        f.create_dataset("cubes", data=np.zeros(1))
    reopened = CubeCache(tmp_path, settings)  # a rerun of the same extraction
    assert reopened.has("v1") and not reopened.has("v2")
    reopened.write("v2", _arrays(1), n_frames=1)
    assert CubeCache(tmp_path, settings).has("v2")
    assert CubeCache(tmp_path, {"regions": "file"}).folder != cache.folder


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    import pytest

    from image_od.files.atomic import atomic_path

    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
