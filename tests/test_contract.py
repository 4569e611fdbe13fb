"""The detector contract of image_od.detector.OutlierDetector, over every registered detector (issue 25): settings
stored unchanged under their own names, get_params/set_params once in the base class, scikit-learn's clone."""
import inspect

import pytest
from sklearn.base import clone

from image_od.registry import DETECTORS as REGISTERED
from vad.attributes import AttributeKNN

DETECTORS = sorted({*REGISTERED.values(), AttributeKNN}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_settings_are_stored_as_given_and_clone_works(cls):
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    model = cls()
    params = model.get_params()
    assert params.keys() == set(inspect.signature(cls).parameters)
    assert all(params[k] == v or params[k] is v for k, v in defaults.items())
    copy = clone(model)
    assert type(copy) is cls and copy is not model and copy.get_params().keys() == params.keys()
    assert model.set_params(seed=7).get_params()["seed"] == 7
    with pytest.raises(ValueError, match="has no setting nope"):
        model.set_params(nope=1)


def test_fit_leaves_the_global_random_states_as_it_found_them():
    """A detector seeds what it draws from its own seed (seed_everything reseeds the global generators, network
    initialisation draws from them); the caller's random streams are not reset by a fit."""
    import random

    import numpy as np
    import torch

    from image_od.baselines.shallow import PixelIsolationForest
    from image_od.detector import OutlierDetector
    from image_od.engine.training import seed_everything

    class Draws(OutlierDetector):
        def __init__(self, seed: int = 0):
            self.seed = seed

        def fit(self, X):
            seed_everything(self.seed)
            self.decision_scores_ = np.random.rand(len(X)) + torch.rand(len(X)).numpy() + random.random()
            return self

        def decision_function(self, X):
            return np.zeros(len(X))

    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    x = np.zeros((4, 1, 8, 8), np.float32)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = draw()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    first = Draws().fit(x).decision_scores_
    PixelIsolationForest(seed=0).fit(x)
    assert draw() == expected  # the caller's streams continue where they were
    np.testing.assert_array_equal(Draws().fit(x).decision_scores_, first)  # and the fit is still seeded


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_fit_refuses_a_single_sample(cls):
    """The transductive fit learns what is normal from what it scores: one sample is refused by every detector's
    fit, before any work (the rule lives in the base class, not in a command line)."""
    import numpy as np

    with pytest.raises(ValueError, match=r"fit needs at least 2 samples to learn what is normal, got 1"):
        cls().fit(np.zeros((1, 1, 32, 32), np.float32))


def test_every_registered_detector_is_covered():
    assert len(DETECTORS) >= 20 and all(hasattr(c, "decision_function") for c in DETECTORS)


@pytest.mark.slow  # trains a small network (about 15 s)
def test_the_readme_python_example_runs_as_written(capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    exec(compile(code, "README.md", "exec"), {})
    auroc = float(re.search(r"AUROC (\d\.\d+)", capsys.readouterr().out)[1])
    assert auroc > 0.6  # measured 0.707; chance is 0.5


def test_one_input_check_for_every_image_detector():
    import numpy as np
    import torch

    from image_od.data.samples import ArrayData
    from image_od.detector import image_array

    x = np.zeros((2, 1, 8, 8), np.float32)
    assert image_array(x) is x  # as given: no copy
    assert image_array(ArrayData({"image": x})).shape == image_array(ArrayData({"a": x})).shape == x.shape
    assert isinstance(image_array(torch.zeros(2, 3, 8, 8), channels=(1, 3)), torch.Tensor)
    for bad, message in ((np.zeros((2, 8, 8)), r"X: expected images \(N, C, H, W\), got shape \(2, 8, 8\)"),
                         (np.zeros((0, 1, 8, 8)), "X: no images"),
                         (ArrayData({"a": x, "b": x}), "ArrayData needs an 'image' array")):
        with pytest.raises(ValueError, match=message):
            image_array(bad)
    with pytest.raises(ValueError, match=r"exposure: expected images .* with C in \{1, 3\}"):
        image_array(np.zeros((2, 5, 8, 8)), "exposure", channels=(1, 3))
