"""The methods of ``image-od bench``: one registry line each, every detector built from its profile section.

Protocols (``Cell``): ``transductive`` (the paper's: one class plus a ratio of outliers, fitted and scored as one
unlabelled set), ``one-class`` (fit on the training split's inliers, score the test split) and ``polluted``
(ELITE's: fit on a training pool with a share ``ratio`` of anomalies, plus a small labelled validation set that only
methods whose ``fit`` takes ``X_val``/``y_val`` use; score the test split). Methods whose ``fit`` takes ``exposure``
(ADIB, ADRA) also get the profile's outlier-exposure corpus.

Every registry line is a ``Method``: the detector that gives its scores (built from profile section ``section``
of ``pipelines.images.profiles`` with ``fixed`` settings that define the method; ``RATIO`` stands for the cell's outlier
ratio) and how a bench cell runs it. Discriminative E3Outlier's methods share trained networks within a cell (one
``(dataset, ratio, class, seed)`` contaminated set): the base network gives the NE, GTP, MP and SSD+IF rows, the
reboot-weighted networks serve RRW and JSR, the ensemble members ENS; each row equals its own detector fitted
alone. Every other method fits its own detector (``own``). ``image-od score`` offers the methods whose detector
needs nothing but the images (``SCORE_METHODS``).
"""
from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from image_od.data.benchmarks import LabelledImages, load_dataset
from image_od.data.protocol import contaminated_set, one_class_split, polluted_split, to_model_input
from image_od.detector import OutlierDetector
from image_od.e3outlier.discriminative import DiscriminativeE3Outlier
from image_od.e3outlier.refinement import weights_from_scores
from image_od.registry import DETECTORS
from pipelines.images.profiles import Profile, read_profile

# method sections that add settings over a family's
METHOD_SECTIONS = {"e3outlier-mcd": "discriminative", "e3outlier-ens": "discriminative",
                   "e3outlier-jsr": "discriminative", "elite-ae": "elite"}
SECTIONS: dict[str, type] = {**DETECTORS, **{m: DETECTORS[f] for m, f in METHOD_SECTIONS.items()}}


def load_profile(name_or_path: str, overrides: list[str] | None = None) -> Profile:
    """A profile (``cpu``, ``paper``, ``colour`` or a YAML path) with ``key=value`` overrides, checked against the
    bench's detector families (:data:`SECTIONS`)."""
    return read_profile(name_or_path, overrides, SECTIONS)
RATIO = object()  # in a registry line's fixed settings: the cell's outlier ratio
PROTOCOLS = ("transductive", "one-class", "polluted")
VALIDATION_PER_SIDE = {False: 10, True: 50}  # ELITE's labelled validation set: 10 + 10 grey, 50 + 50 colour images

Result = tuple[np.ndarray, float, float]  # outlier scores (higher = more anomalous), fit_s, score_s


@functools.lru_cache(maxsize=2)
def exposure_images(dataset: str, root: str | None, split: str, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` images (seeded draw) of a split (train, test or all) of ``dataset``: an outlier-exposure corpus."""
    data = load_dataset(dataset, root)
    images = {"train": data.train_images, "test": data.test_images, "all": data.merged()[0]}.get(split)
    if images is None:
        raise ValueError(f"exposure split must be train, test or all, got {split!r}")
    pick = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return to_model_input(images[pick])


def detector_settings(profile: Profile, section: str, colour: bool, fixed: Mapping[str, Any],
                      ratio: float | None = None) -> dict[str, Any]:
    """The ``__init__`` settings of the detector of profile ``section`` (over its family's settings) with ``fixed``
    settings on top; a ``RATIO`` setting becomes ``ratio``, or keeps the detector's default where ``ratio`` is None."""
    return {**profile.settings(section, colour, METHOD_SECTIONS.get(section)), **fixed_settings(fixed, ratio)}


def fixed_settings(fixed: Mapping[str, Any], ratio: float | None = None) -> dict[str, Any]:
    """A registry line's fixed settings with ``RATIO`` made ``ratio``, or left out (the default) where it is None."""
    return {key: ratio if value is RATIO else value for key, value in fixed.items()
            if value is not RATIO or ratio is not None}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the wall seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


class Cell:
    """One (dataset, protocol, ratio, class, seed) set and the fits its methods share (each made once).

    ``x`` is what the detectors fit, ``eval_x`` what they score (the same array in the transductive protocol) and
    ``is_outlier`` the ground truth of ``eval_x``; ``fit_data`` holds the other data a protocol gives to ``fit``."""

    def __init__(self, data: LabelledImages, ratio: float, inlier: int, seed: int, profile: Profile, device: str,
                 progress: bool, protocol: str = "transductive"):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
        self.colour, self.dataset = data.colour, data.name
        self.fit_data: dict[str, np.ndarray] = {}
        if protocol == "transductive":
            images, labels = data.merged()
            self.set = contaminated_set(images, labels, inlier, ratio, seed, profile.max_size)
            self.x = self.eval_x = to_model_input(self.set.images)
            self.is_outlier = self.set.is_outlier
        else:
            split = (data.train_images, data.train_labels, data.test_images, data.test_labels, inlier)
            if protocol == "one-class":
                self.set = one_class_split(*split, seed, max_train=profile.max_size, max_test=profile.max_size)
            else:
                self.set = polluted_split(*split, ratio, min(profile.max_size, 5000), VALIDATION_PER_SIDE[self.colour],
                                          seed, max_test=profile.max_size)
                self.fit_data = {"X_val": to_model_input(self.set.val_images), "y_val": self.set.val_is_outlier}
            self.x, self.eval_x = to_model_input(self.set.train_images), to_model_input(self.set.test_images)
            self.is_outlier = self.set.test_is_outlier.astype(bool)
        self.protocol, self.ratio, self.profile, self.seed = protocol, ratio, profile, seed
        self.device, self.progress = device, progress
        self._fits: dict[str, tuple[Any, float]] = {}
        self._scores: dict[str, tuple[dict[str, np.ndarray], float]] = {}

    def detector(self, section: str, **fixed) -> OutlierDetector:
        """The detector of profile ``section`` (over its family's settings) with ``fixed`` settings on top. A
        deep detector trains alone (``data_parallel`` off): under torchrun the bench gives each rank its own cells."""
        cls = SECTIONS[section]
        run = {"seed": self.seed, "device": self.device, "progress": self.progress,
               **({"data_parallel": False} if "data_parallel" in cls._param_names() else {})}
        return cls(**{**run, **detector_settings(self.profile, section, self.colour, fixed, self.ratio)})

    def fit(self, key: str, make: Callable[[], tuple[Any, float]]) -> tuple[Any, float]:
        """The fitted model ``key`` and its own fit seconds, made by ``make`` on first use."""
        if key not in self._fits:
            self._fits[key] = make()
        return self._fits[key]

    def timed_fit(self, model, **fit_args) -> tuple[Any, float]:
        """Fit ``model`` on ``x`` with the protocol's other data where its ``fit`` takes them; the seconds it took."""
        accepted = inspect.signature(model.fit).parameters
        extra = {k: v for k, v in self.fit_data.items() if k in accepted}
        source = self.profile.exposure_source(self.colour)
        if "exposure" in accepted and source is not None:
            if source["dataset"] == self.dataset:
                kind = "colour" if self.colour else "grey"
                raise ValueError(f"the outlier-exposure corpus of the profile is {self.dataset}, the dataset under "
                                 f"test: it would hold the test's anomaly classes. Name another one with --set "
                                 f"exposure.{kind}.dataset=NAME --set exposure.{kind}.root=PATH")
            extra["exposure"] = exposure_images(source["dataset"], source.get("root"), source.get("split", "test"),
                                                self.profile.max_size, self.seed)
        return timed(lambda: model.fit(self.x, **extra, **fit_args))

    def scores(self, key: str, model: DiscriminativeE3Outlier) -> tuple[dict[str, np.ndarray], float]:
        """Every outlier score of ``eval_x`` by a discriminative model and the seconds they took (computed once)."""
        if key not in self._scores:
            self._scores[key] = timed(lambda: model.scores(self.eval_x, model.available_scores))
        return self._scores[key]

    # the discriminative networks the methods share: one network, no refinement, unless a method says so
    def discriminative(self, section: str = "discriminative", **fixed) -> DiscriminativeE3Outlier:
        return self.detector(section, **{**ONE_NETWORK, **fixed})

    def base(self):
        return self.fit("base", lambda: self.timed_fit(self.discriminative()))

    def base_weights(self) -> np.ndarray:
        return weights_from_scores(-self.scores("base", self.base()[0])[0]["ne"])

    def weighted(self, j: int):
        """The j-th network trained with the base network's scores as weights (reboot re-weighting)."""
        return self.fit(f"weighted{j}", lambda: self.timed_fit(self.discriminative(**self._member(j)),
                                                               sample_weight=self.base_weights()))

    def member(self, j: int):
        return self.base() if j == 0 else self.fit(f"member{j}", lambda: self.timed_fit(
            self.discriminative(**self._member(j))))

    def _member(self, j: int) -> dict[str, Any]:
        """Settings of the j-th network of an ensemble. Members after the first score only inside the merged
        ensemble, which chooses its own scored operations, so they skip the (costly, label-free) choice."""
        return {"seed": self.seed + j, **({"score_ops_rule": "random"} if j > 0 else {})}


ONE_NETWORK = {"ensemble": 1, "reweight": "none"}  # discriminative E3Outlier without refinement


@dataclass(frozen=True)
class Method:
    """One registry line: the detector that gives the method's scores, built from profile ``section`` with
    ``fixed`` settings on top (``detector_settings``), and ``run``, how a bench cell gets those scores (sharing
    networks with other methods of the cell where it can)."""
    run: Callable[[Cell], Result]
    section: str
    fixed: Mapping[str, Any]

    def __call__(self, cell: Cell) -> Result:
        return self.run(cell)

    @property
    def needs(self) -> tuple[str, ...]:
        """What the line's detector needs besides the images (pre-trained weights, a corpus, labels, a package)."""
        return SECTIONS[self.section](**fixed_settings(self.fixed)).needs


def shared(name: str) -> Method:
    """A score of the shared base network (BAS = NE)."""
    def run(cell: Cell) -> Result:
        model, fit_s = cell.base()
        scores, score_s = cell.scores("base", model)
        return scores[name], fit_s, score_s
    return Method(run, "discriminative", {**ONE_NETWORK, "score": name})


def single(key: str, score: str, section: str = "discriminative", **fixed) -> Method:
    """A discriminative method with its own network (settings that change training), scored by ``score``."""
    def run(cell: Cell) -> Result:
        model, fit_s = cell.fit(key, lambda: cell.timed_fit(cell.detector(section, **line.fixed)))
        scores, score_s = cell.scores(key, model)
        return scores[score], fit_s, score_s
    line = Method(run, section, {**ONE_NETWORK, "score": score, **fixed})
    return line


def _rrw(cell: Cell) -> Result:
    model, fit_s = cell.weighted(0)
    scores, score_s = cell.scores("weighted0", model)
    return scores["ne"], cell.base()[1] + fit_s, score_s


def _ensemble(cell: Cell, method: str, member: Callable[[int], tuple[Any, float]], extra_fit_s: float) -> Result:
    fits = [member(j) for j in range(cell.detector(method).ensemble)]
    merged = DiscriminativeE3Outlier.merged([m for m, _ in fits], cell.x)
    scores, score_s = timed(lambda: merged.scores(cell.eval_x, ["ne"])["ne"])
    return scores, extra_fit_s + sum(s for _, s in fits), score_s


def _ens(cell: Cell) -> Result:
    return _ensemble(cell, "e3outlier-ens", cell.member, 0.0)


def _jsr(cell: Cell) -> Result:
    return _ensemble(cell, "e3outlier-jsr", cell.weighted, cell.base()[1])


def own(section: str, **fixed) -> Method:
    """A detector of its own: built from profile ``section`` with ``fixed`` settings, fitted on the cell's ``x``. In
    the transductive protocol its scores are those of the fitted set (``decision_scores_``, which exclude a sample's
    match with itself where a score compares samples); otherwise it scores ``eval_x``."""
    def run(cell: Cell) -> Result:
        model, fit_s = cell.timed_fit(cell.detector(section, **line.fixed))
        if cell.protocol == "transductive":
            return np.asarray(model.decision_scores_, float), fit_s, 0.0
        scores, score_s = timed(lambda: model.decision_function(cell.eval_x))
        return np.asarray(scores, float), fit_s, score_s
    line = Method(run, section, fixed)
    return line


METHODS: dict[str, Method] = {
    "e3outlier": shared("ne"),  # discriminative E3Outlier with the paper's default NE score (BAS)
    "e3outlier-gtp": shared("gtp"),
    "e3outlier-mp": shared("mp"),
    "e3outlier-mcd": single("mcd", "mcd", "e3outlier-mcd"),
    "ssd-if": shared("ssd_if"),
    "e3outlier-orw": single("orw", "ne", reweight="online"),
    "e3outlier-rrw": Method(_rrw, "discriminative", {"ensemble": 1, "reweight": "reboot"}),
    "e3outlier-ens": Method(_ens, "e3outlier-ens", {"reweight": "none"}),
    "e3outlier-jsr": Method(_jsr, "e3outlier-jsr", {"reweight": "reboot"}),
    "e3outlier-ml": single("ml", "ne", multi_label=True),
    "e3outlier-g": own("generative"),
    "e3outlier-c": own("contrastive"),
    "cae": own("cae"),
    "cae-if": own("cae-if", contamination=RATIO),
    "drae": own("drae"),
    "dsebm": own("dsebm"),
    "rdae": own("rdae"),
    "dagmm": own("dagmm"),
    "mo-gaal": own("mo-gaal"),
    "rsrae": own("rsrae"),
    "res50-lof": own("pretrained", detector="lof"),
    "res50-if": own("pretrained", detector="if", contamination=RATIO),
    "iforest": own("iforest"),
    # ELITE and the baselines its paper compares with (the polluted protocol: ELITE reads the labelled validation set)
    "deep-svdd": own("deep-svdd"),
    "elite": own("elite"),  # on Deep SVDD, the public code's form
    "elite-paper": own("elite", form="paper"),
    "elite-ae": own("elite-ae", base="ae"),
    "ae": own("elite-ae", base="ae", form="none"),  # ELITE's autoencoder without re-weighting
    # transfer from pretrained weights with outlier exposure (the profile's pretrained weights and exposure corpus)
    "adib": own("adib"),
    "adib-scratch": own("adib", weights=None),  # the same network trained from scratch
    "adib-alpha0": own("adib", alpha=0.0),  # fine-tuning without the L2-SP penalty
    "adra": own("adra"),
    # contrastive one-class methods and the plain CSI (SimCLR with rotations) their papers compare with
    "unicon-ha": own("unicon-ha"),
    "csi": own("csi"),
    "csi-synth": own("csi-synth"),
    # independent cross-checks with PyOD's models (a benchmark extra: pip install pyod)
    "pyod-iforest": own("pyod", model="iforest"),
    "pyod-lof": own("pyod", model="lof"),
    "pyod-auto-encoder": own("pyod", model="auto-encoder"),
    "pyod-deep-svdd": own("pyod", model="deep-svdd"),
    "pyod-mo-gaal": own("pyod", model="mo-gaal"),
}
# the methods of ``image-od score``: those whose detector needs nothing but the images
SCORE_METHODS = tuple(name for name, method in METHODS.items() if not method.needs)
