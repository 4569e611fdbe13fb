"""Discriminative E3Outlier (paper Sec. 3.2-3.5): self-supervised operation classification, then network
uncertainty on the operated copies of each image as its outlier score, with the paper's score refinement.

Training (paper protocol, ``ops_per_image=None``) runs over the shuffled grid of all (image, operation) pairs, as
the reference code does; the operated images are made per batch (``operations_discriminative.apply_operations``),
never for the whole set. ``ops_per_image=m`` instead shows each image m times per epoch with operations drawn at
random per batch (operation sampling, for small compute budgets).

Scores (averaged over the operations, computed from log-softmax; ``decision_function`` negates them so that
higher = more anomalous):
- ``gtp``: probability of the operation actually applied (the pseudo label);
- ``mp``: maximum probability;
- ``ne``: negative entropy, sum_c p log2 p (the paper's default);
- ``mcd``: MC dropout (needs ``dropout`` > 0; the TPAMI code uses 0.05 and 5 passes): the mean over operations of
  Mean[max p] - Var[max p] over stochastic passes (Eq. 10), with dropout on and batch norm in eval mode;
  ``mc_spread="std"`` subtracts the standard deviation instead, as the reference code does;
- ``ssd_if``: SSD+IF, an Isolation Forest on the penultimate features of the untransformed images.

Score refinement (Sec. 3.5, supplement Algorithms 1-3), as settings:
- ``reweight="online"`` (ORW): one network; after every epoch the samples' loss weights become their min-max
  normalised normality scores (weights start at 1);
- ``reweight="reboot"`` (RRW): a first network is trained unweighted; its normalised scores weight the loss of
  the final network(s), which restart from the same initial weights;
- ``ensemble=e`` (ENS): e networks from seeds seed, seed+1, ...; their softmax outputs are averaged before
  scoring. With ``reweight="reboot"`` this is the joint score refinement (JSR, Algorithm 3).
``multi_label=True`` trains the 5-head variant (rotation, translation, irregular rotation, flip, patch
arrangement; Sec. 4.2.3) and averages the scores of the heads.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from image_od.data.samples import ArrayData, Batch
from image_od.detector import OutlierDetector
from image_od.e3outlier.refinement import weights_from_scores
from image_od.engine.precision import PRECISIONS, autocast, resolve_precision
from image_od.engine.training import TrainSettings, resolve_device, score_batch_size, seed_everything, train
from image_od.networks.backbones import make_backbone
from image_od.operations.discriminative import apply_operations, multi_labels, operation_set


class ProbabilityRule(ABC):
    """A score rule read off one head's softmax over one operated copy: ``normality(p, log_p, label)`` per image
    (higher = more normal), averaged over the scored operations and heads by the detector."""

    name = ""

    @abstractmethod
    def normality(self, p: torch.Tensor, log_p: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Per image, the normality of softmax ``p`` (its log ``log_p``) given the applied operation's ``label``."""


class GroundTruthProbability(ProbabilityRule):
    """``gtp``: the probability of the operation actually applied (the pseudo label)."""

    name = "gtp"

    def normality(self, p, log_p, label):
        return p[:, label]


class MaximumProbability(ProbabilityRule):
    """``mp``: the largest class probability."""

    name = "mp"

    def normality(self, p, log_p, label):
        return p.max(1).values


class NegativeEntropy(ProbabilityRule):
    """``ne``: sum_c p log2 p, the paper's default."""

    name = "ne"

    def normality(self, p, log_p, label):
        return (p * log_p).sum(1) / math.log(2)


PROBABILITY_RULES = {rule.name: rule for rule in (GroundTruthProbability(), MaximumProbability(), NegativeEntropy())}
SCORES = (*PROBABILITY_RULES, "mcd", "ssd_if")


class Reweighting(ABC):
    """A score-refinement strategy (Sec. 3.5): which networks are trained, and with which per-image loss weights.
    ``train_networks`` returns the trained networks and the loss weights of the final ones (None: the caller's)."""

    name = ""

    def check(self, detector: DiscriminativeE3Outlier) -> None:
        """Raise ``ValueError`` for settings of ``detector`` that this strategy cannot honour."""

    @abstractmethod
    def train_networks(self, detector: DiscriminativeE3Outlier, X: np.ndarray, images: torch.Tensor,
                       weight: torch.Tensor | None) -> tuple[list[nn.Module], torch.Tensor | None]:
        """Train ``detector``'s networks on ``images`` (``X`` as given) with the caller's loss ``weight``."""


class NoReweighting(Reweighting):
    """``none``: the ``ensemble`` networks (seeds seed, seed+1, ...) with the caller's weights, if any."""

    name = "none"

    def train_networks(self, detector, X, images, weight):
        return [detector._train_net(images, detector.seed + j, weight) for j in range(detector.ensemble)], weight


class OnlineReweighting(Reweighting):
    """``online`` (ORW, Algorithm 1): one network; after every epoch the images' loss weights become their min-max
    normalised normality (NE) under the network so far, starting from 1 (or the caller's weights)."""

    name = "online"

    def check(self, detector):
        if detector.ensemble > 1:
            raise ValueError("online re-weighting trains one network (ensemble=1), as Algorithm 1")

    def train_networks(self, detector, X, images, weight):
        weights = torch.ones(len(images)) if weight is None else weight.clone()

        def update(net: nn.Module, epoch: int) -> None:  # Algorithm 1, lines 6-8
            detector._use_networks([net], images.numpy())
            weights.copy_(torch.from_numpy(weights_from_scores(-detector.scores(images.numpy(), ["ne"])["ne"])))

        return [detector._train_net(images, detector.seed, weights, after_epoch=update)], weight


class RebootReweighting(Reweighting):
    """``reboot`` (RRW, Algorithm 2): a first network trained with the caller's weights; its min-max normalised
    normality (NE) weights the loss of the final network(s), which restart from the same initial weights. With
    ``ensemble`` > 1 this is the joint score refinement (JSR, Algorithm 3)."""

    name = "reboot"

    def train_networks(self, detector, X, images, weight):
        detector._use_networks([detector._train_net(images, detector.seed, weight)], X)
        weight = torch.from_numpy(weights_from_scores(-detector.scores(X, ["ne"])["ne"]))
        return NoReweighting().train_networks(detector, X, images, weight)


REWEIGHTINGS = {s.name: s for s in (NoReweighting(), OnlineReweighting(), RebootReweighting())}
MC_SPREADS = ("var", "std")  # Eq. 10 | the reference code
SCORE_OPS_RULES = ("random", "confident", "spread")


def mc_dropout_normality(max_prob: torch.Tensor, spread: str = "var") -> torch.Tensor:
    """One operation's MC-dropout normality from the max probabilities of the stochastic passes (passes, N): Eq. 10's
    Mean - Var, or Mean - Std (``spread="std"``, the reference code); unbiased (n - 1) spread estimates."""
    return max_prob.mean(0) - (max_prob.var(0) if spread == "var" else max_prob.std(0))


class DiscriminativeE3Outlier(OutlierDetector):
    """``X``: float array (N,C,32,32) in [-1, 1] (see ``protocol.to_model_input``).

    Compute settings beyond the paper: ``ops_per_image`` (operation sampling in training) and ``score_ops``
    (score with that many operations instead of all K, chosen by ``score_ops_rule``: see :meth:`score_subset`,
    the label-free rules measuring each operation on ``score_ops_images`` of the images), both off by default, and
    ``precision``: ``"auto"`` (the default: bfloat16 autocast where the device runs it natively, about twice as
    fast on CPUs with AVX512-BF16, fp32 elsewhere; see ``precision.resolve_precision``), ``"bf16"`` or ``"fp32"``.
    """

    def __init__(self, *, operations: str = "RA+IA+PR", score: str = "ne", backbone: str = "wrn-10-4",
                 dropout: float = 0.0, mc_passes: int = 5, mc_spread: str = "var", multi_label: bool = False,
                 epochs: int | None = None,
                 ops_per_image: int | None = None, score_ops: int | None = None, score_ops_rule: str = "random",
                 score_ops_images: int = 1024, batch_size: int = 128,
                 optimizer: str = "sgd", lr: float = 1e-3, lr_schedule: str = "constant",
                 weight_decay: float = 5e-4, precision: str = "auto",
                 reweight: str = "none", ensemble: int = 1, device: str = "auto", seed: int = 0,
                 progress: bool = True, data_parallel: bool = True):
        self.operations, self.score, self.backbone = operations, score, backbone
        self.dropout, self.mc_passes, self.mc_spread, self.multi_label = dropout, mc_passes, mc_spread, multi_label
        self.epochs = epochs  # None: ceil(250 / K), the paper's budget of about 250 passes over the data
        self.ops_per_image, self.score_ops, self.score_ops_rule = ops_per_image, score_ops, score_ops_rule
        self.score_ops_images = score_ops_images
        self.batch_size, self.optimizer, self.lr, self.weight_decay = batch_size, optimizer, lr, weight_decay
        self.lr_schedule = lr_schedule  # the paper's constant rate, or a cosine decay to 0 over all steps
        self.precision, self.reweight, self.ensemble = precision, reweight, ensemble
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    # ----------------------------------------------------------------------------------------------- fitting
    def fit(self, X: np.ndarray, sample_weight: np.ndarray | None = None) -> "DiscriminativeE3Outlier":
        """Train the network(s); ``sample_weight`` (N,) weights each image's loss (re-weighting)."""
        self._check_settings()
        self.device_ = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, self.device_)
        self.ops_ = operation_set(self.operations)
        self.labels_, self.heads_ = (multi_labels(self.ops_) if self.multi_label
                                     else (torch.arange(len(self.ops_))[:, None], (len(self.ops_),)))
        images = torch.as_tensor(X, dtype=torch.float32)
        weight = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
        nets, weight = REWEIGHTINGS[self.reweight].train_networks(self, X, images, weight)
        self._use_networks(nets, X)
        self.sample_weight_ = None if weight is None else weight.numpy()
        self.decision_scores_ = self.decision_function(X)
        return self

    def _use_networks(self, nets: list[torch.nn.Module], X: np.ndarray) -> None:
        """Score with these trained networks, on the operations chosen for them (``score_subset``)."""
        self.nets_ = nets
        self.score_labels_ = self.score_subset(X)

    def _check_settings(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; expected one of {SCORES}")
        if self.score == "mcd" and self.dropout <= 0:
            raise ValueError("score 'mcd' needs dropout > 0 (the TPAMI code uses 0.05)")
        if self.mc_spread not in MC_SPREADS:
            raise ValueError(f"unknown mc_spread {self.mc_spread!r}; expected one of {MC_SPREADS}")
        if self.reweight not in REWEIGHTINGS:
            raise ValueError(f"unknown reweight {self.reweight!r}; expected one of {tuple(REWEIGHTINGS)}")
        REWEIGHTINGS[self.reweight].check(self)
        if self.score_ops_rule not in SCORE_OPS_RULES:
            raise ValueError(f"unknown score_ops_rule {self.score_ops_rule!r}; expected one of {SCORE_OPS_RULES}")
        if self.score_ops_images < 2:
            raise ValueError(f"score_ops_images must be at least 2 (a spread over images), got {self.score_ops_images}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")

    def score_subset(self, X: np.ndarray) -> torch.Tensor:
        """The operations that score (sorted labels): all of them, or ``score_ops`` of them chosen by
        ``score_ops_rule``: ``"random"``, a subset fixed by the seed; ``"confident"``, those with the highest mean
        of :meth:`operation_confidence` (those the network recognises best); ``"spread"``, those with the largest
        standard deviation of it over the images (those that tell images apart)."""
        k = len(self.ops_)
        if self.score_ops is None or self.score_ops >= k:
            return torch.arange(k)
        if self.score_ops_rule == "random":
            chosen = torch.randperm(k, generator=torch.Generator().manual_seed(self.seed))[:self.score_ops]
            return chosen.sort().values
        mean, std = self.operation_confidence(X)
        return (mean if self.score_ops_rule == "confident" else std).topk(self.score_ops).indices.sort().values

    @torch.no_grad()
    def operation_confidence(self, X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Per operation (K,), the mean and the standard deviation over images of the probability the trained
        network(s) give the applied operation, on up to ``score_ops_images`` of ``X`` drawn by the seed (label-free:
        the pseudo labels only)."""
        self._check_fitted("nets_")
        rows = torch.randperm(len(X), generator=torch.Generator().manual_seed(self.seed))[:self.score_ops_images]
        images = torch.as_tensor(X[rows.sort().values.numpy()], dtype=torch.float32)
        for net in self.nets_:
            net.eval()
        gtp = torch.zeros(len(self.ops_), len(images))
        for label in range(len(self.ops_)):
            sums = {"gtp": torch.zeros(len(images))}  # only the rule read here is computed
            self._add_operation_scores(images, label, sums)
            gtp[label] = sums["gtp"] / len(self.heads_)
        return gtp.mean(1), gtp.std(1)

    def _autocast(self):
        return autocast(self.precision_, self.device_)

    def _logits(self, net, x: torch.Tensor) -> list[torch.Tensor]:
        """One float32 logit tensor per head."""
        if self.device_.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = net(x)[0].float()
        return list(torch.split(logits, self.heads_, dim=1))

    def _train_net(self, images: torch.Tensor, seed: int, weight: torch.Tensor | None,
                   after_epoch: Callable[[nn.Module, int], None] | None = None) -> nn.Module:
        """One network trained on ``images``' operated copies from ``seed``, each image's loss weighted by
        ``weight`` (None: unweighted; read at every step, so ``after_epoch(net, epoch)`` may update it in place)."""
        generator = seed_everything(seed)
        k = len(self.ops_)
        net = make_backbone(self.backbone, images.shape[1], sum(self.heads_), self.dropout)
        if self.device_.type == "cpu":
            net = net.to(memory_format=torch.channels_last)
        images_dev = images.to(self.device_)
        labels = self.labels_.to(self.device_)
        if self.ops_per_image is None:  # the reference grid: every (image, operation) pair once per epoch
            pairs = ArrayData({"sample": torch.arange(len(images)).repeat_interleave(k),
                               "op": torch.arange(k).repeat(len(images))})
        else:  # operation sampling: each image m times per epoch, the operation drawn per batch
            pairs = ArrayData({"sample": torch.arange(len(images)).repeat(self.ops_per_image)})
        op_generator = torch.Generator().manual_seed(seed + 7919)
        def loss(model, batch: Batch) -> torch.Tensor:
            sample = batch["sample"]
            op = batch["op"] if "op" in batch else torch.randint(k, (len(sample),), generator=op_generator).to(sample)
            x = apply_operations(images_dev[sample], op, self.ops_)
            target = labels[op]
            ce = sum(F.cross_entropy(logit, target[:, h], reduction="none")
                     for h, logit in enumerate(self._logits(model, x)))
            if weight is None:
                return ce.mean()
            w = weight.to(ce.device)[sample]
            return (ce * w).sum() / w.sum().clamp_min(1e-12)

        settings = TrainSettings(epochs=self.epochs or math.ceil(250 / k), batch_size=self.batch_size,
                                 optimizer=self.optimizer, lr=self.lr, lr_schedule=self.lr_schedule,
                                 weight_decay=self.weight_decay, eps=1e-7, progress=self.progress,
                                 data_parallel=self.data_parallel)
        train(net, loss, pairs, settings, device=self.device_, generator=generator,
              on_epoch_end=None if after_epoch is None else lambda epoch: after_epoch(net, epoch),
              desc=f"train {self.backbone} on {k} operations (seed {seed})")
        return net

    # ----------------------------------------------------------------------------------------------- scoring
    @property
    def available_scores(self) -> tuple[str, ...]:
        """The score rules this detector can compute (``mcd`` only with dropout)."""
        return tuple(s for s in SCORES if s != "mcd" or self.dropout > 0)

    @torch.no_grad()
    def scores(self, X: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The outlier scores ``names`` of ``X`` (higher = more anomalous; ``SCORES``: gtp, mp, ne, mcd, ssd_if),
        each computed only when asked: the probability rules averaged over the scored operations (and the heads;
        an ensemble averages its networks' softmax outputs first), ``mcd`` with dropout, ``ssd_if`` an Isolation
        Forest on the penultimate features."""
        self._check_fitted("nets_")
        unknown = sorted(set(names) - set(SCORES))
        if unknown or ("mcd" in names and self.dropout <= 0):
            raise ValueError(f"unknown or unavailable scores {unknown or ['mcd']} (mcd needs dropout > 0)")
        for net in self.nets_:
            net.eval()
        images = torch.as_tensor(X, dtype=torch.float32)
        per_op = [n for n in (*PROBABILITY_RULES, "mcd") if n in names]
        sums = {s: torch.zeros(len(images)) for s in per_op}
        if per_op:
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if self.device_.type == "cuda" else []):
                torch.manual_seed(self.seed)  # MC-dropout masks: the same scores on every call
                self._accumulate(images, sums)
        n = len(self.score_labels_) * len(self.heads_)
        out = {s: -(v / n).numpy() for s, v in sums.items()}
        if "ssd_if" in names:
            out["ssd_if"] = -self._isolation_forest(images)
        return out

    def _accumulate(self, images: torch.Tensor, sums: dict[str, torch.Tensor]) -> None:
        """Add each scored operation's per-image scores (summed over heads) to ``sums``."""
        for label in self.score_labels_.tolist():
            self._add_operation_scores(images, label, sums)

    def _add_operation_scores(self, images: torch.Tensor, label: int, sums: dict[str, torch.Tensor]) -> None:
        """Add one operation's per-image scores (summed over heads) to ``sums``."""
        chunk = score_batch_size(self.device_)
        for start in range(0, len(images), chunk):
            x = images[start:start + chunk].to(self.device_)
            x = apply_operations(x, torch.full((len(x),), label, device=x.device), self.ops_)
            part = slice(start, start + len(x))
            rules = [PROBABILITY_RULES[name] for name in sums if name in PROBABILITY_RULES]
            for h, logp in enumerate(self._mean_log_probs(x)):
                p = logp.exp()
                for rule in rules:
                    sums[rule.name][part] += rule.normality(p, logp, self.labels_[label, h])
            if "mcd" in sums:
                sums["mcd"][part] += self._mc_dropout_max_prob(x)

    def _mean_log_probs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per head, the log of the softmax averaged over the networks (log-softmax itself for one network)."""
        per_net = [[F.log_softmax(logit, 1).cpu() for logit in self._logits(net, x)] for net in self.nets_]
        if len(per_net) == 1:
            return per_net[0]
        return [torch.logsumexp(torch.stack(heads), 0) - math.log(len(per_net)) for heads in zip(*per_net)]

    def _mc_dropout_max_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Per head, Mean[max p] - Var[max p] (Eq. 10; ``mc_spread="std"``: - Std) over ``mc_passes`` passes with
        only the dropout layers in training mode (summed over heads and networks, then divided by the networks)."""
        total = torch.zeros(len(x))
        for net in self.nets_:
            dropouts = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
            for m in dropouts:
                m.train()
            passes = [[F.softmax(logit, 1).max(1).values.cpu() for logit in self._logits(net, x)]
                      for _ in range(self.mc_passes)]
            for m in dropouts:
                m.eval()
            for head in zip(*passes):
                maxp = torch.stack(head)
                total += mc_dropout_normality(maxp, self.mc_spread)
        return total / len(self.nets_)

    def _isolation_forest(self, images: torch.Tensor) -> np.ndarray:
        from sklearn.ensemble import IsolationForest

        features = torch.cat([self._features(part.to(self.device_))
                              for part in images.split(score_batch_size(self.device_))]).numpy()
        forest = IsolationForest(n_estimators=100, random_state=self.seed).fit(features)
        return forest.decision_function(features)  # higher = more normal

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, concatenated over the networks of an ensemble."""
        if self.device_.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            return torch.cat([net(x)[1].float().cpu() for net in self.nets_], 1)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The ``score`` rule's outlier scores of ``X`` (only that rule is computed)."""
        return self.scores(X, [self.score])[self.score]

    @classmethod
    def merged(cls, members: list["DiscriminativeE3Outlier"], X: np.ndarray) -> "DiscriminativeE3Outlier":
        """One ensemble detector from members with the same settings, fitted on ``X`` (their networks are shared,
        not copied), so that a benchmark can reuse networks it has already trained. The scoring settings are the
        first member's, and the scored operations are chosen for the ensemble, as its own ``fit`` would."""
        first = members[0]
        ensemble = cls(**{**first.get_params(), "ensemble": sum(len(m.nets_) for m in members)})
        for name in ("device_", "precision_", "ops_", "labels_", "heads_", "sample_weight_"):
            setattr(ensemble, name, getattr(first, name))
        ensemble._use_networks([net for m in members for net in m.nets_], X)
        return ensemble

