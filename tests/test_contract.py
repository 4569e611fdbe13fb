"""The detector contract of image_od.detector.OutlierDetector, over every registered detector (issue 25): settings
stored unchanged under their own names, get_params/set_params once in the base class, scikit-learn's clone."""
import inspect

import pytest
from sklearn.base import clone

from pipelines.image_od_methods import SECTIONS
from vad.attributes import AttributeKNN

DETECTORS = sorted({*SECTIONS.values(), AttributeKNN}, key=lambda c: c.__name__)


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
