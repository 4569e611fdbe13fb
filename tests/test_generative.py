"""The generative E3Outlier core on tiny image data: API, score direction, checkpoint resume."""
import numpy as np
import pytest
import torch

from image_od.data import ArrayData
from image_od.generative import GenerativeE3Outlier, GenerativeTask, Normaliser
from image_od.nets import ConvAutoencoder
from image_od.training import TrainSettings


def _left(b):
    return b["image"][..., :8].float()


def _right(b):
    return b["image"][..., 8:].float()


def _data(n_in=120, n_out=12, seed=0):
    """Inliers: the right half mirrors the left half. Outliers: unrelated halves."""
    rng = np.random.default_rng(seed)
    left = rng.normal(0, 1, (n_in + n_out, 1, 16, 8)).astype(np.float32)
    right = left[..., ::-1].copy()
    right[n_in:] = rng.normal(0, 1, (n_out, 1, 16, 8))
    labels = np.r_[np.zeros(n_in), np.ones(n_out)]
    return ArrayData({"image": np.concatenate([left, right], -1)}), labels


def _model(epochs: int = 60, **kw):
    return GenerativeE3Outlier([GenerativeTask("left->right", _left, _right)], widths=(8, 16), seed=0,
                               train_settings=TrainSettings(epochs=epochs, batch_size=32, progress=False), **kw)


def test_conv_autoencoder_shapes():
    assert ConvAutoencoder(4, 2, (8, 16, 32))(torch.zeros(3, 4, 32, 32)).shape == (3, 2, 32, 32)


def test_fit_returns_self_and_outliers_score_higher():
    from sklearn.metrics import roc_auc_score

    data, labels = _data()
    model = _model()
    assert model.fit(data) is model
    scores = model.decision_function(data)
    assert scores.shape == (len(labels),)
    assert roc_auc_score(labels, scores) > 0.8  # higher = more anomalous
    assert model.history_[-1] < model.history_[0]


def test_scoring_before_fit_is_an_error():
    with pytest.raises(RuntimeError, match="not fitted"):
        _model().decision_function(_data()[0])


def test_normaliser_zscore_and_minmax():
    e = np.array([[1.0, 10.0], [3.0, 30.0]])
    assert np.allclose(Normaliser("zscore").fit(e)(e), [[-1, -1], [1, 1]])
    assert np.allclose(Normaliser("minmax").fit(e)(e), [[0, 0], [1, 1]])


def test_training_resumes_from_checkpoint(tmp_path):
    data, _ = _data()
    ckpt = tmp_path / "ckpt.pt"
    full = _model(epochs=12).fit(data)
    interrupted = _model(epochs=12, checkpoint=ckpt)
    interrupted.train_settings.epochs = 5
    interrupted.fit(data)  # stops after 5 epochs, as if killed there
    resumed = _model(epochs=12, checkpoint=ckpt).fit(data)  # continues from epoch 5 to 12
    assert len(resumed.history_) == 12
    assert np.allclose(resumed.history_, full.history_, rtol=1e-4)


def test_save_and_load_reproduce_scores(tmp_path):
    data, _ = _data()
    model = _model(epochs=10).fit(data)
    model.save(tmp_path / "m.pt")
    restored = _model(epochs=10).load(tmp_path / "m.pt", data)
    np.testing.assert_allclose(restored.decision_function(data), model.decision_function(data), rtol=1e-5, atol=1e-6)
    other = GenerativeE3Outlier([GenerativeTask("other", _left, _right)], widths=(8, 16))
    with pytest.raises(ValueError, match="holds tasks"):
        other.load(tmp_path / "m.pt", data)
