"""Generative E3Outlier (paper Sec. 3.6.1, Eq. 13-16).

Self-supervision comes from pairs of data operations: a generator G is trained to produce ``O(x|y2)`` from
``O(x|y1)`` with ``y1 != y2`` (Eq. 13-14), one generator per pair, the losses summed over pairs (Eq. 16). The
outlier score of a pair is the squared generation error (Eq. 15, whose sign we flip so that higher = more
anomalous); each pair's errors are normalised over the fitted set and summed (Eq. 16, with the normalisation
of Sec. 4.3.2 so that pairs on different scales weigh alike).

Operations are plain functions of a batch dict, so the same detector serves images (e.g. grey -> colour) and
video cubes (four patches -> middle patch, -> its optical flow; see ``vad.cloze``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from image_od.data.samples import ArrayData, Batch, SampleSource, iterate_batches
from image_od.detector import OutlierDetector
from image_od.e3outlier.refinement import SelfPaced
from image_od.engine.training import TrainSettings, predict, resolve_device, seed_everything, train
from image_od.files.atomic import atomic_path
from image_od.files.safe_io import UnreadableFileError, load_tensors
from image_od.networks.generators import ConvAutoencoder, DeepCAE, UNet

Operation = Callable[[Batch], torch.Tensor]


@dataclass(frozen=True)
class GenerativeTask:
    """One operation pair (y1, y2): the generator maps ``source(x) = O(x|y1)`` to ``target(x) = O(x|y2)``."""

    name: str
    source: Operation
    target: Operation


NORMALISATIONS = ("zscore", "minmax", "none")
GENERATORS = ("conv", "deep-cae", "unet")


def make_generator(kind: str, in_channels: int, out_channels: int, widths: Sequence[int]) -> nn.Module:
    """``conv``: the video CAE (``nets.ConvAutoencoder``, one block per width); ``deep-cae``: the supplement's CAE of
    the image baselines (``nets.DeepCAE``, three widths, 256-d tanh code, tanh output); ``unet``: the supplement's
    UNet (``nets.UNet``, first block ``widths[0]`` channels)."""
    if kind == "conv":
        return ConvAutoencoder(in_channels, out_channels, widths)
    if kind == "deep-cae":
        return DeepCAE(in_channels, out_channels, widths)
    if kind == "unet":
        return UNet(in_channels, out_channels, widths[0])
    raise ValueError(f"unknown generator {kind!r}; expected one of {GENERATORS}")


@dataclass
class Normaliser:
    """Per-task affine normalisation of errors, fitted on the scored set (transductive)."""

    kind: str = "zscore"
    shift: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))

    def fit(self, errors: np.ndarray) -> "Normaliser":
        if self.kind not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {self.kind!r}; expected one of {NORMALISATIONS}")
        if self.kind == "zscore":
            self.shift, self.scale = errors.mean(0), errors.std(0)
        elif self.kind == "minmax":
            self.shift, self.scale = errors.min(0), errors.max(0) - errors.min(0)
        else:
            self.shift, self.scale = np.zeros(errors.shape[1]), np.ones(errors.shape[1])
        self.scale = np.where(self.scale > 0, self.scale, 1.0)
        return self

    def __call__(self, errors: np.ndarray) -> np.ndarray:
        return (errors - self.shift) / self.scale


class GenerativeE3Outlier(OutlierDetector):
    """Generative E3Outlier detector: one conv autoencoder per operation pair.

    ``X`` is an ``image_od.data.samples.ArrayData`` or a ``Dataset`` of dict samples that the tasks' operations read.
    Scores: ``task_errors`` gives the raw squared error of each pair, ``decision_function`` their normalised sum.
    After ``fit(X)``, ``train_errors_`` and ``decision_scores_`` hold them for X itself (the transductive case).

    ``generator`` picks the network of every pair (``make_generator``).

    Refinement while training on contaminated data (off by default): ``self_paced`` weights every pair's loss by
    its own current errors (``refinement.SelfPaced``), and ``fit(X, sample_weight)`` weights each sample's loss
    (E3Outlier's re-weighting; the weighted loss is sum w * error / sum w per batch).
    """

    def __init__(
        self,
        tasks: Sequence[GenerativeTask],
        *,
        widths: Sequence[int] = (32, 64, 128),
        train_settings: TrainSettings | None = None,
        normalisation: str = "zscore",
        device: str = "auto",
        seed: int = 0,
        checkpoint: str | Path | None = None,
        self_paced: SelfPaced | None = None,
        generator: str = "conv",
    ):
        self.tasks = list(tasks)
        self.generator = generator
        self.widths = tuple(widths)
        self.train_settings = train_settings or TrainSettings()
        self.normalisation = normalisation
        self.device = device
        self.seed = seed
        self.checkpoint = checkpoint
        self.self_paced = self_paced

    def _build(self, data: SampleSource) -> nn.ModuleDict:
        """One generator per task (operation pair), sized from a probe batch."""
        probe = next(iterate_batches(data, 2))
        nets = {}
        for task in self.tasks:
            src, tgt = task.source(probe), task.target(probe)
            if src.shape[-2:] != tgt.shape[-2:]:
                raise ValueError(f"task {task.name}: source {tuple(src.shape)} and target {tuple(tgt.shape)} "
                                 "differ in size")
            nets[task.name] = make_generator(self.generator, src.shape[1], tgt.shape[1], self.widths)
        return nn.ModuleDict(nets)

    def _squared_errors(self, nets: nn.ModuleDict, batch: Batch) -> list[torch.Tensor]:
        """Each pair's per-sample squared errors, (B, D) flattened; an operation that several pairs share (the
        cloze source of every video target) is computed once per batch."""
        done: dict[Operation, torch.Tensor] = {}

        def apply(op: Operation) -> torch.Tensor:
            if op not in done:
                done[op] = op(batch)
            return done[op]

        return [((nets[t.name](apply(t.source)).float() - apply(t.target)) ** 2).flatten(1) for t in self.tasks]

    def _sample_losses(self, nets: nn.ModuleDict, batch: Batch) -> torch.Tensor:
        """Per-sample mean squared generation error of each pair (Eq. 14 before the batch mean), (B, n_tasks)."""
        return torch.stack([e.mean(1) for e in self._squared_errors(nets, batch)], 1)

    def _loss_fn(self, n_samples: int):
        """Eq. 16, the sum over pairs of the batch-mean error, with the sample and self-paced weights if any; also
        returns the ``on_epoch_start`` hook that tells the self-paced weighting where training stands."""
        sp, steps_per_epoch = self.self_paced, -(-n_samples // self.train_settings.batch_size)
        state = {"epoch": 0, "step": 0}

        def start(epoch: int) -> None:
            state["epoch"], state["step"] = epoch, 0

        def loss(nets: nn.ModuleDict, batch: Batch) -> torch.Tensor:
            losses = self._sample_losses(nets, batch)
            weight = batch.get("weight")
            if weight is None:
                weight = torch.ones(len(losses), device=losses.device)
            if sp is not None and state["epoch"] >= sp.warmup_epochs:
                t = (state["epoch"] - sp.warmup_epochs) * steps_per_epoch + state["step"]
                per_task = torch.stack([sp.weights(losses[:, j], t) for j in range(losses.shape[1])], 1)
                losses = losses * per_task
            state["step"] += 1
            return (losses.sum(1) * weight).sum() / weight.sum().clamp_min(1e-12)

        return loss, start

    def _errors(self, batch: Batch) -> torch.Tensor:
        """Per-sample squared error of each pair, (B, n_tasks): the negated Eq. 15."""
        return torch.stack([e.sum(1) for e in self._squared_errors(self.nets_, batch)], 1)

    def fit(self, X: SampleSource, sample_weight: np.ndarray | None = None) -> "GenerativeE3Outlier":
        """Train the generators on ``X``; ``sample_weight`` (N,) weights each sample's loss (re-weighting)."""
        if not self.tasks:
            raise ValueError("GenerativeE3Outlier needs at least one task")
        generator = seed_everything(self.seed)
        device = resolve_device(self.device)
        self.nets_ = self._build(X)
        checkpoint = Path(self.checkpoint) if self.checkpoint else None
        loss, start = self._loss_fn(len(X))
        context = {"self_paced": None if self.self_paced is None else asdict(self.self_paced)}
        self.history_ = train(self.nets_, loss, _with_weights(X, sample_weight), self.train_settings, device=device,
                              generator=generator, checkpoint=checkpoint, context=context, on_epoch_start=start,
                              desc="train " + "+".join(t.name for t in self.tasks))
        self.train_errors_ = self.task_errors(X)  # as PyOD's decision_scores_: the fitted set's raw errors
        self.normaliser_ = Normaliser(self.normalisation).fit(self.train_errors_)
        self.decision_scores_ = self.normaliser_(self.train_errors_).sum(1)
        return self

    def save(self, path: str | Path) -> None:
        """Write the fitted generators, normalisation and loss history (atomically), as tensors and plain data
        only, so that ``load`` can read the file without unpickling code."""
        self._check_fitted("normaliser_")
        n = self.normaliser_
        normaliser = {"kind": n.kind, "shift": torch.from_numpy(np.asarray(n.shift)),
                      "scale": torch.from_numpy(np.asarray(n.scale))}
        with atomic_path(path) as tmp:
            torch.save({"tasks": [t.name for t in self.tasks], "nets": self.nets_.state_dict(),
                        "normaliser": normaliser, "history": [float(h) for h in self.history_]}, tmp)

    def load(self, path: str | Path, X: SampleSource) -> "GenerativeE3Outlier":
        """Restore what ``save`` wrote; ``X`` (any samples of the same kind) sizes the generators. Files holding
        anything but tensors and plain data are refused (``safe_io.UnsafeFileError``)."""
        state = load_tensors(path)
        if not isinstance(state, dict) or not {"tasks", "nets", "normaliser", "history"} <= set(state):
            raise UnreadableFileError(f"{path}: not a model file written by GenerativeE3Outlier.save")
        names = [t.name for t in self.tasks]
        if state["tasks"] != names:
            raise ValueError(f"{path} holds tasks {state['tasks']}, this detector has {names}")
        self.nets_ = self._build(X)
        try:
            self.nets_.load_state_dict(state["nets"])
        except RuntimeError as err:
            raise ValueError(f"{path}: its generators do not match this detector's settings or data (e.g. widths "
                             f"or cube size changed since training): {str(err).splitlines()[0]}") from None
        self.nets_.to(resolve_device(self.device))
        norm = state["normaliser"]
        self.normaliser_ = Normaliser(norm["kind"], norm["shift"].numpy(), norm["scale"].numpy())
        self.history_ = list(state["history"])
        return self

    def task_errors(self, X: SampleSource) -> np.ndarray:
        """Raw squared generation error of every sample for every task, shape (N, n_tasks)."""
        self._check_fitted("nets_")
        self.nets_.eval()
        device = next(self.nets_.parameters()).device
        return predict(self._errors, X, device=device,
                       progress=self.train_settings.progress)

    def normalised_errors(self, X: SampleSource) -> np.ndarray:
        self._check_fitted("normaliser_")
        return self.normaliser_(self.task_errors(X))

    def decision_function(self, X: SampleSource) -> np.ndarray:
        return self.normalised_errors(X).sum(1)


class _Weighted(torch.utils.data.Dataset):
    """A dict-sample dataset with a ``weight`` entry added to every sample."""

    def __init__(self, data: torch.utils.data.Dataset, weight: np.ndarray):
        self.data, self.weight = data, torch.as_tensor(weight, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Batch:
        return {**self.data[i], "weight": self.weight[i]}


def _with_weights(X: SampleSource, sample_weight: np.ndarray | None) -> SampleSource:
    """``X`` with each sample's loss weight as a ``weight`` entry (``X`` itself when there are none)."""
    if sample_weight is None:
        return X
    if len(sample_weight) != len(X):
        raise ValueError(f"sample_weight has {len(sample_weight)} entries for {len(X)} samples")
    if isinstance(X, ArrayData):
        return ArrayData({**X.arrays, "weight": torch.as_tensor(sample_weight, dtype=torch.float32)})
    return _Weighted(X, sample_weight)
