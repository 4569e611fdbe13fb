"""The learned cube score: generative E3Outlier's cloze generators, with the optional refinements and the other
learned scores of ``docs/METHOD.md`` built on the image core.

Components (each a per-cube score, higher = more anomalous):
- ``cloze``: the cloze generators' errors (one per target), normalised on the fitted cubes and summed (Eq. 16),
  optionally trained with self-paced weights (``refine.self_paced``) and refined by reboot re-weighting
  (``refine.reboot_rounds``);
- ``discriminative``: the image core's discriminative E3Outlier on the stacked 5-frame cubes (frames as channels);
- ``self_train``: a cube classifier self-trained on the pseudo labels of the score so far.
The learned score (``model``) is the cloze score, z(cloze) + z(discriminative) when both are used, and then the
self-trained classifier's score alone or added (``self_train.combine``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from image_od.data.samples import SampleSource
from image_od.e3outlier.discriminative import DiscriminativeE3Outlier
from image_od.e3outlier.generative import GenerativeE3Outlier
from image_od.e3outlier.refinement import SelfPaced, weights_from_scores
from image_od.e3outlier.self_training import PseudoLabelSelfTraining
from image_od.engine.precision import resolve_precision
from image_od.engine.training import TrainSettings, resolve_device

from .cloze import cloze_tasks
from .scoring import zscore


def cloze_model(config: Any, checkpoint: Path | None = None, progress: bool = True) -> GenerativeE3Outlier:
    """The (unfitted) cloze generators of ``config.model`` and ``config.refine``, trained in channels_last with
    Adam's fused kernel (1.3x the cubes per second of the plain loop on a CPU, docs/BENCHMARKS.md#cloze-speed) and
    bf16 autocast where ``model.precision`` resolves to it."""
    m, r = config.model, config.refine
    self_paced = SelfPaced(r.sp_warmup_epochs, r.sp_shrink, r.sp_init_range) if r.self_paced else None
    return GenerativeE3Outlier(
        cloze_tasks(tuple(m.targets)), widths=m.widths, normalisation=m.normalisation, device=config.device,
        seed=config.seed, checkpoint=checkpoint, self_paced=self_paced,
        train_settings=TrainSettings(epochs=m.epochs, batch_size=m.batch_size, lr=m.lr, progress=progress,
                                     num_workers=config.data.num_workers, channels_last=True, fused=True,
                                     precision=resolve_precision(m.precision, resolve_device(config.device))))


def fit_cloze(config: Any, data: SampleSource, checkpoint: Path | None, progress: bool = True) -> GenerativeE3Outlier:
    """Fit the cloze generators on ``data``; with ``refine.reboot_rounds`` = R, refit R times from the same initial
    weights with each cube's loss weighted by the min-max normalised normality (-score) of the previous fit."""
    model = cloze_model(config, checkpoint, progress).fit(data)
    for r in range(config.refine.reboot_rounds):
        weight = weights_from_scores(-model.decision_scores_)
        path = None if checkpoint is None else checkpoint.with_suffix(f".reboot{r + 1}.pt")
        model = cloze_model(config, path, progress).fit(data, sample_weight=weight)
        if path is not None:
            path.unlink(missing_ok=True)
    return model


def cube_images(cubes: np.ndarray, flow: np.ndarray | None = None) -> np.ndarray:
    """Cubes (N,T,S,S) uint8 grey or (N,T,3,S,S) colour -> float32 (N,C,S,S): the frames as channels in [-1, 1],
    then, if given, the middle flow's two channels divided by the standard deviation of all flow values."""
    x = cubes.astype(np.float32).reshape(len(cubes), -1, *cubes.shape[-2:]) / 127.5 - 1.0
    if flow is None:
        return x
    f = flow.astype(np.float32)
    return np.concatenate([x, f / max(float(f.std()), 1e-6)], 1)


def discriminative_scores(config: Any, train_cubes: np.ndarray, score_cubes: np.ndarray,
                          progress: bool = True) -> np.ndarray:
    """Discriminative E3Outlier (NE score) trained on up to ``max_train`` seeded cubes, scoring ``score_cubes``."""
    d = config.discriminative
    rng = np.random.default_rng(config.seed)
    pick = np.sort(rng.permutation(len(train_cubes))[:d.max_train])
    model = DiscriminativeE3Outlier(
        operations=d.operations, backbone=d.backbone, epochs=d.epochs, ops_per_image=d.ops_per_image,
        score_ops=d.score_ops, optimizer="adam", lr=1e-3, precision="auto",
        device=config.device, seed=config.seed, progress=progress)
    model.fit(cube_images(train_cubes[pick]))
    return np.concatenate([model.decision_function(cube_images(score_cubes[i:i + 8192]))
                           for i in range(0, len(score_cubes), 8192)])


def self_train_scores(config: Any, cubes: np.ndarray, flow: np.ndarray, initial: np.ndarray,
                      progress: bool = True) -> np.ndarray:
    """The self-trained cube classifier's scores of every cube, pseudo labels from ``initial``."""
    s = config.self_train
    model = PseudoLabelSelfTraining(rounds=s.rounds, normal_fraction=s.normal_fraction,
                                    abnormal_fraction=s.abnormal_fraction, backbone=s.backbone, epochs=s.epochs,
                                    device=config.device, seed=config.seed, progress=progress)
    return model.fit(cube_images(cubes, flow), initial).decision_scores_


def learned_score(config: Any, cloze: np.ndarray, train_arrays: dict[str, np.ndarray] | None,
                  score_arrays: dict[str, np.ndarray], progress: bool = True) -> dict[str, np.ndarray]:
    """Every learned component of the scored cubes and their combination ``model``.

    ``cloze``: the cloze score of the scored cubes; ``train_arrays``: the cubes the models learn from (None: the
    scored cubes themselves, the transductive case); ``score_arrays``: the scored cubes (``cubes``, ``flow``).
    """
    components = {"cloze": cloze}
    model = cloze
    d = config.discriminative
    if d.use != "off":
        train_cubes = (train_arrays or score_arrays)["cubes"]
        components["discriminative"] = discriminative_scores(config, train_cubes, score_arrays["cubes"], progress)
        model = components["discriminative"] if d.use == "alone" else zscore(cloze) + zscore(components["discriminative"])
    if config.self_train.rounds > 0:
        components["self_train"] = self_train_scores(config, score_arrays["cubes"], score_arrays["flow"], model,
                                                     progress)
        model = (components["self_train"] if config.self_train.combine == "classifier"
                 else zscore(model) + zscore(components["self_train"]))
    components["model"] = model
    return components
