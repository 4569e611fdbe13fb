"""ELITE (Zhang, Cao, VanNostrand, Madden, Rundensteiner, KDD 2021): robust deep anomaly detection with meta-gradient
re-weighting of a polluted training pool, guided by a small labelled validation set.

ELITE wraps a differentiable per-sample anomaly score Omega(x; theta):
- ``base="svdd"``: the Deep SVDD distance ``||phi(x) - c||`` (:class:`image_od.baselines.deep_svdd.DeepSVDDNet`, c from the
  initial forward pass as Deep SVDD; Algorithm 1 and the code use the plain distance, Sec. 3.2.1 the square:
  ``squared=True``);
- ``base="ae"``: the reconstruction error ``||AE(x) - x||`` (plain l2 norm, as the paper and the code), with ELITE's
  own autoencoder (:class:`EliteAE`, ``ae_net="elite"``) or the project's deep CAE (``ae_net="deep-cae"``).

Each step draws a batch x_1..x_n of the unlabelled pool; the meta-gradient of sample i is the effect on the
validation loss of up-weighting its score in a one-step look-ahead (learning to re-weight, Ren et al. 2018)::

    theta_hat(eps) = theta - eta * sum_i eps_i grad Omega(x_i; theta)                 (Eq. 11, Algorithm 1 line 8)
    w_i = -d L^v(theta_hat(eps)) / d eps_i |_{eps=0} = eta * <grad L^v(theta), grad Omega(x_i; theta)>   (Eq. 13)

with ``eta = lr * meta_scale`` and the validation loss on the labelled set (Eq. 4, 6; class-balanced as the code)
``L^v = 0.5 mean_{normal} Omega + 0.5 mean_{anomalous} max(C - Omega, 0)``. w_i > 0 (the score gradient agrees with
the validation gradient): normal; w_i < 0: anomalous, and the training step *increases* that sample's score (it is
pushed away from the centre / made hard to reconstruct). :func:`meta_weights` computes w exactly at eps = 0 with one
reverse pass on the validation set and one forward-mode (JVP) pass on the batch; :func:`meta_weights_lookahead` is the
code's route (double backward through the look-ahead), kept as the tests' cross-check. Test score = plain Omega.

Two forms (``form``), which differ only in how a negatively weighted sample is trained and in the margin C:
- ``"code"`` (default; the public code ``github:Mazic4/ELITE``, = the linearised update of the paper's Theorem 2,
  Eq. 16): loss ``mean_i w_i Omega_i``, so a sample with w_i < 0 is pushed away without bound; C (used only in L^v)
  = the largest score of the labelled set at initialisation (``main.py``, ``main_AE.py``).
- ``"paper"`` (Eq. 4, 10, 13, 14): pseudo-label ``y_i = sign(w_i)``, weight ``alpha_i = |w_i|``, loss
  ``mean_i alpha_i l(x_i, y_i)`` with the hinge ``l(x, -1) = max(C - Omega, 0)``: a sample is pushed away only
  until its score reaches C; C = the mean score of the training pool at the initial parameters (Sec. 4.2.1).
- ``"none"``: no re-weighting (w = 1), the plain base at the same network and settings (the baseline).
Why ``"code"`` is the default: it is what produced the paper's figures, it is the update whose validation-loss
decrease the paper proves (Theorem 2), and it has no margin to set in the training loss. ``margin`` (``"labelled-max"``,
``"pool-mean"`` or a number) overrides either form's rule.

Settings: defaults = the public code: SGD without momentum, lr 3e-4 (svdd) / 6e-4 (ae), batch 128, 150 epochs of the
pool (the code's ``5000 // 128 * 150`` iterations), the whole labelled set in every step, meta_scale 5 on grey
images and n_labelled / 2 on colour ones (``main_AE.py``; the SVDD code takes it from the command line, and the
paper's Fig. 6 sweeps 1..100 and recommends small values on simple data).

Deviations and choices (not in the paper):
- Scale: the paper's alpha_i = eta_M |M_i| with M_i = eta_y eta_theta / n <.,.>; the constants eta_y, eta_M, 1/n are
  one common factor of all weights, which the code (and we) set as ``lr * meta_scale``.
- Batch norm: the look-ahead passes use the statistics of the batch (the validation set's for L^v), as the code
  does on its copied network; they do not update the running statistics (the code's copy is discarded). The real
  forward pass updates them; scoring uses them (eval mode). The centre is computed in eval mode (the code too),
  the margins with batch statistics (the code computes C in train mode). A training batch of one image runs the
  whole step in eval mode (the deep CAE's BatchNorm1d cannot normalise one sample).
- Batches: shuffled epochs of the pool (the shared training loop), not a fresh random batch per iteration.
- The code's ``main_AE.py`` never zeroes the gradients of its network (they accumulate over iterations); we do.
- Inputs in [-1, 1] zero-padded to 32x32 (the project's protocol); the code resizes MNIST/FMNIST to 32x32 in [0, 1].
- ``fit`` takes the labelled set as ``X_val`` and ``y_val`` with 1 = anomaly, 0 = normal (the project's convention;
  the paper uses +1 normal / -1 anomaly, the code 1 normal / 0 anomaly).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, jvp

from image_od.baselines.autoencoders import as_images
from image_od.baselines.deep_svdd import DeepSVDDNet, init_center
from image_od.data.samples import ArrayData, Batch, split_batches
from image_od.detector import OutlierDetector
from image_od.engine.training import TrainSettings, predict, resolve_device, seed_everything, train
from image_od.networks.generators import DeepCAE

__all__ = ["ELITE", "EliteAE", "batch_statistics_only", "elite_loss", "meta_weights", "meta_weights_lookahead",
           "validation_loss"]

Params = dict[str, torch.Tensor]
ScoreFn = Callable[[Params, torch.Tensor], torch.Tensor]
FORMS = ("code", "paper", "none")
BASES = ("svdd", "ae")
DEFAULT_LR = {"svdd": 3e-4, "ae": 6e-4}


class EliteAE(nn.Module):
    """ELITE's autoencoder (``model.AE``): encoder [conv 4x4 s2 p1, BN(affine=False, eps 1e-4), LeakyReLU] with 4L, 2L,
    L channels; decoder [deconv 4x4 s2 p1, BN, LeakyReLU] with L/2, L/4 channels, then a deconv to the input
    channels, an affine BN and tanh. L = 32 for grey and 128 for colour images in the code."""

    def __init__(self, in_channels: int, latent: int = 32):
        super().__init__()
        if latent < 4 or latent % 4:
            raise ValueError(f"EliteAE needs a latent width divisible by 4, got {latent}")
        enc: list[nn.Module] = []
        c = in_channels
        for w in (4 * latent, 2 * latent, latent):
            enc += [nn.Conv2d(c, w, 4, 2, 1), nn.BatchNorm2d(w, eps=1e-4, affine=False), nn.LeakyReLU()]
            c = w
        dec: list[nn.Module] = []
        for w in (latent // 2, latent // 4):
            dec += [nn.ConvTranspose2d(c, w, 4, 2, 1), nn.BatchNorm2d(w, eps=1e-4, affine=False), nn.LeakyReLU()]
            c = w
        dec += [nn.ConvTranspose2d(c, in_channels, 4, 2, 1), nn.BatchNorm2d(in_channels), nn.Tanh()]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@contextmanager
def batch_statistics_only(model: nn.Module) -> Iterator[None]:
    """Within the block, batch norm layers in train mode normalise with the batch's statistics and leave their
    running statistics untouched (eval mode is unchanged: running statistics)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


def validation_loss(scores: torch.Tensor, is_anomaly: torch.Tensor, margin: float) -> torch.Tensor:
    """ELITE's validation loss (Eq. 4, 6; class-balanced as the code): 0.5 * mean score of the labelled normals +
    0.5 * mean hinge ``max(margin - score, 0)`` of the labelled anomalies (a class that is absent is left out)."""
    normal, anomalous = scores[~is_anomaly], scores[is_anomaly]
    terms = []
    if len(normal):
        terms.append(normal.mean())
    if len(anomalous):
        terms.append(F.relu(margin - anomalous).mean())
    if not terms:
        raise ValueError("the validation set is empty")
    return torch.stack(terms).mean()


def meta_weights(score_fn: ScoreFn, params: Params, x: torch.Tensor, x_val: torch.Tensor, is_anomaly: torch.Tensor,
                 margin: float, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ELITE's per-sample weights ``w_i = step * <grad L^v(theta), grad Omega(x_i; theta)>`` (Eq. 13: minus the
    derivative of the look-ahead validation loss in the weight of sample i, at weight 0) and ``L^v(theta)``.

    ``score_fn(params, images)`` gives the per-sample scores Omega under ``params``. One reverse pass on the validation
    set gives v = grad L^v; one forward-mode pass (a JVP of theta -> Omega(x; theta) along v) gives every <v, grad
    Omega_i> at once. Exact: at weight 0 the look-ahead parameters are theta itself. Both results are detached.
    """
    primal = {k: p.detach() for k, p in params.items()}
    v, loss = grad_and_value(lambda p: validation_loss(score_fn(p, x_val), is_anomaly, margin))(primal)
    _, dots = jvp(lambda p: score_fn(p, x), (primal,), (v,))
    return (step * dots).detach(), loss.detach()


def meta_weights_lookahead(score_fn: ScoreFn, params: Params, x: torch.Tensor, x_val: torch.Tensor,
                           is_anomaly: torch.Tensor, margin: float, step: float) -> torch.Tensor:
    """The same weights by the public code's route: eps = 0 (requires grad), the look-ahead
    ``theta_hat = theta - step * grad_theta sum_i eps_i Omega_i`` built with ``create_graph``, then
    ``w = -dL^v(theta_hat)/d eps`` (double backward). About twice the cost of :func:`meta_weights`."""
    names = list(params)
    theta = [params[k].detach().requires_grad_() for k in names]
    eps = torch.zeros(len(x), dtype=theta[0].dtype, device=x.device, requires_grad=True)
    scores = score_fn(dict(zip(names, theta)), x)
    grads = torch.autograd.grad((eps * scores).sum(), theta, create_graph=True, allow_unused=True)
    ahead = {k: t if g is None else t - step * g for k, t, g in zip(names, theta, grads)}
    loss = validation_loss(score_fn(ahead, x_val), is_anomaly, margin)
    return -torch.autograd.grad(loss, eps)[0].detach()


def elite_loss(scores: torch.Tensor, weights: torch.Tensor, form: str, margin: float) -> torch.Tensor:
    """The training loss of a batch given its scores (with gradient) and meta weights (detached).

    ``code``: ``mean(w * Omega)`` (w < 0 raises the score, without bound); ``paper``: ``mean(|w| * l(x, sign w))``
    with ``l(x, +1) = Omega`` and ``l(x, -1) = max(margin - Omega, 0)`` (Eq. 4, 14); ``none``: ``mean(Omega)``."""
    if form == "code":
        return (weights * scores).mean()
    if form == "paper":
        return (weights.abs() * torch.where(weights >= 0, scores, F.relu(margin - scores))).mean()
    if form == "none":
        return scores.mean()
    raise ValueError(f"unknown ELITE form {form!r}; expected one of {FORMS}")


class ELITE(OutlierDetector):
    """ELITE on Deep SVDD (``base="svdd"``) or an autoencoder (``base="ae"``); see the module docstring.

    ``fit(X, X_val=..., y_val=...)``: X the unlabelled (polluted) pool, float (N, C, H, W) in [-1, 1], H = W
    divisible by 8; X_val, y_val the labelled validation set (y 1 = anomaly, 0 = normal; both classes needed), used
    only in the meta-gradient. ``form="none"`` needs no labels. Sets ``decision_scores_`` (the pool's scores),
    ``train_weights_`` (each pool sample's weights summed over training: negative = judged anomalous, the paper's
    Fig. 7c), ``val_losses_`` (L^v at each step), ``margin_``, ``center_`` (svdd) and ``history_`` (epoch losses).
    ``decision_function`` = the plain score Omega, higher = more anomalous.

    ``lr`` None: 3e-4 (svdd) or 6e-4 (ae); ``meta_scale`` None: 5 on grey images, half the labelled set on colour
    ones; ``margin`` None: the form's rule; ``ae_latent`` None: 32 on grey, 128 on colour images.
    """

    @property
    def needs(self) -> tuple[str, ...]:
        """A labelled validation set, except without re-weighting (``form="none"``)."""
        return () if self.form == "none" else ("a labelled validation set",)

    def __init__(self, *, base: str = "svdd", form: str = "code", epochs: int = 150, batch_size: int = 128,
                 lr: float | None = None, meta_scale: float | None = None, margin: float | str | None = None,
                 optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0, squared: bool = False,
                 widths: Sequence[int] = (32, 64, 128), rep_dim: int = 128, center_eps: float = 0.1,
                 ae_net: str = "elite", ae_latent: int | None = None, device: str = "auto", seed: int = 0,
                 progress: bool = False, data_parallel: bool = True):
        self.base, self.form, self.epochs, self.batch_size = base, form, epochs, batch_size
        self.lr, self.meta_scale, self.margin = lr, meta_scale, margin
        self.optimizer, self.momentum, self.weight_decay, self.squared = optimizer, momentum, weight_decay, squared
        self.widths, self.rep_dim, self.center_eps = widths, rep_dim, center_eps
        self.ae_net, self.ae_latent = ae_net, ae_latent
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    # ------------------------------------------------------------------------------------------ building blocks
    def _check_settings(self) -> None:
        if self.base not in BASES:
            raise ValueError(f"unknown ELITE base {self.base!r}; expected one of {BASES}")
        if self.form not in FORMS:
            raise ValueError(f"unknown ELITE form {self.form!r}; expected one of {FORMS}")
        if self.ae_net not in ("elite", "deep-cae"):
            raise ValueError(f"unknown ae_net {self.ae_net!r}; expected 'elite' or 'deep-cae'")
        if isinstance(self.margin, str) and self.margin not in ("labelled-max", "pool-mean"):
            raise ValueError(f"unknown margin rule {self.margin!r}; expected 'labelled-max', 'pool-mean' or a number")

    def _build(self, x: torch.Tensor) -> nn.Module:
        channels, size = x.shape[1], x.shape[-1]
        if self.base == "svdd":
            return DeepSVDDNet(channels, tuple(self.widths), self.rep_dim, size)
        if self.ae_net == "deep-cae":
            return DeepCAE(channels, size=size)
        if size % 8:
            raise ValueError(f"EliteAE needs a size divisible by 8, got {size}")
        return EliteAE(channels, self.ae_latent or (32 if channels == 1 else 128))

    def _scores(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Omega from the network's output: distance to the centre (svdd) or reconstruction error (ae)."""
        diff = output - self.center_ if self.base == "svdd" else (output - x).flatten(1)
        sq = diff.pow(2).sum(1)
        return sq if self.squared else sq.sqrt()

    def _score_fn(self, model: nn.Module) -> ScoreFn:
        return lambda params, x: self._scores(functional_call(model, params, (x,)), x)

    @torch.no_grad()
    def _margin(self, model: nn.Module, x: torch.Tensor, x_val: torch.Tensor) -> float:
        rule = self.margin if self.margin is not None else ("pool-mean" if self.form == "paper" else "labelled-max")
        if not isinstance(rule, str):
            return float(rule)
        model.train()
        with batch_statistics_only(model):  # train-mode batch statistics, running statistics untouched
            if rule == "labelled-max":
                return float(self._scores(model(x_val), x_val).max())
            total = 0.0
            for rows in split_batches(torch.arange(len(x)), self.batch_size):
                chunk = x[rows].to(self.device_)
                total += float(self._scores(model(chunk), chunk).sum())
            return total / len(x)

    # ------------------------------------------------------------------------------------------------- fitting
    def fit(self, X: Any, X_val: Any = None, y_val: Any = None) -> "ELITE":
        self._check_settings()
        x = as_images(X)
        if self.form != "none":
            if X_val is None or y_val is None:
                raise ValueError("ELITE needs a labelled validation set: fit(X, X_val=..., y_val=...) (y 1 = anomaly); "
                                 "form='none' trains without re-weighting")
            x_val = as_images(X_val)
            y = np.asarray(y_val).reshape(-1)
            if len(y) != len(x_val) or not np.isin(y, (0, 1)).all():
                raise ValueError(f"y_val must hold one 0/1 label (1 = anomaly) per validation image; got {len(y)} "
                                 f"labels for {len(x_val)} images")
            if y.min() == y.max():
                raise ValueError("the validation set needs both normal (0) and anomalous (1) images")
            if x_val.shape[1:] != x.shape[1:]:
                raise ValueError(f"validation images {tuple(x_val.shape[1:])} differ from training images "
                                 f"{tuple(x.shape[1:])}")
        generator = seed_everything(self.seed)
        self.device_ = resolve_device(self.device)
        model = self._build(x).to(self.device_)
        self.model_ = model
        if self.base == "svdd":
            self.center_ = init_center(model, x, self.device_, self.center_eps)
        lr = self.lr if self.lr is not None else DEFAULT_LR[self.base]
        self.train_weights_ = np.zeros(len(x))
        self.val_losses_: list[float] = []
        if self.form == "none":
            self.margin_ = float("nan")
            loss_fn = self._plain_loss
        else:
            x_val, is_anomaly = x_val.to(self.device_), torch.as_tensor(y == 1, device=self.device_)
            self.margin_ = self._margin(model, x, x_val)
            meta_scale = self.meta_scale if self.meta_scale is not None else (5.0 if x.shape[1] == 1 else len(y) / 2)
            loss_fn = self._meta_loss(x_val, is_anomaly, lr * meta_scale)
        settings = TrainSettings(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=lr,
                                 momentum=self.momentum, weight_decay=self.weight_decay, progress=self.progress,
                                 data_parallel=self.data_parallel)
        data = ArrayData({"image": x, "index": torch.arange(len(x))})
        self.history_ = train(model, loss_fn, data, settings, device=self.device_, generator=generator,
                              desc=f"ELITE-{self.base}")
        self.decision_scores_ = self.decision_function(x)
        return self

    @staticmethod
    def _step_mode(model: nn.Module, x: torch.Tensor):
        """A one-image batch runs in eval mode (batch norm with running statistics); else nothing changes."""
        if len(x) > 1:
            return nullcontext()

        @contextmanager
        def evaluating():
            model.eval()
            try:
                yield
            finally:
                model.train()
        return evaluating()

    def _plain_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x = batch["image"]
        with self._step_mode(model, x):
            scores = self._scores(model(x), x)
        self.train_weights_[batch["index"].cpu().numpy()] += 1.0
        return scores.mean()

    def _meta_loss(self, x_val: torch.Tensor, is_anomaly: torch.Tensor,
                   step: float) -> Callable[[nn.Module, Batch], torch.Tensor]:
        def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
            x = batch["image"]
            with self._step_mode(model, x):
                with batch_statistics_only(model):
                    w, lv = meta_weights(self._score_fn(model), dict(model.named_parameters()), x, x_val, is_anomaly,
                                         self.margin_, step)
                scores = self._scores(model(x), x)
            self.train_weights_[batch["index"].cpu().numpy()] += w.double().cpu().numpy()
            self.val_losses_.append(float(lv))
            return elite_loss(scores, w, self.form, self.margin_)
        return loss_fn

    # ------------------------------------------------------------------------------------------------- scoring
    def decision_function(self, X: Any) -> np.ndarray:
        self._check_fitted("model_")
        self.model_.eval()
        scores = predict(lambda b: self._scores(self.model_(b["image"]), b["image"]),
                         ArrayData({"image": as_images(X)}), device=self.device_)
        return scores.astype(np.float64)
