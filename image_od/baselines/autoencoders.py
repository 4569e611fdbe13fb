"""Autoencoder baselines of E3Outlier (TPAMI supplement Sec. 5, "competing methods"): CAE, CAE-IF, DRAE, RDAE,
RSRAE, all built on the supplement's deep CAE (:class:`image_od.networks.generators.DeepCAE`: 3 conv blocks, fc(4096, 256),
tanh, mirror decoder, tanh output).

Shared settings (supplement, item (1)): PyTorch's default Adam (eps 1e-8; the reference code used 1e-7), lr 1e-3,
weight decay 5e-4, batch 128, 250 epochs; the inputs are ``(N, C, 32, 32)`` float32 in [-1, 1]
(``protocol.to_model_input``), given as a numpy array, a tensor or an ``ArrayData`` with an ``"image"`` array.
Every detector is transductive: ``fit(X)`` sets ``decision_scores_``, the scores of ``X`` itself, and
``decision_function`` gives higher = more anomalous. Scores are computed with batch norm in eval mode.

Choices common to all (not in the papers):
- A training batch of a single image (``N % batch_size == 1``) cannot pass the CAE's BatchNorm1d in train mode;
  that one step runs with batch norm in eval mode (running statistics) instead of failing.
- ``widths`` (64, 128, 256) are the DeepCAE default; the supplement gives only the 4096 = 256 x 4 x 4 flat size.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.ensemble import IsolationForest
from torch import nn

from image_od.data.samples import ArrayData, Batch
from image_od.detector import OutlierDetector, image_array
from image_od.engine.training import TrainSettings, predict, resolve_device, seed_everything, train
from image_od.networks.generators import DeepCAE

__all__ = ["CAE", "CAEIF", "DRAE", "RDAE", "RSRAE"]


# ------------------------------------------------------------------------------------------------- helpers
def as_images(X: Any) -> torch.Tensor:
    """``X`` (checked by ``detector.image_array``) as a float32 CPU tensor (N,C,H,W)."""
    return torch.as_tensor(image_array(X)).detach().to("cpu", torch.float32)


def forward(model: nn.Module, x: torch.Tensor) -> Any:
    """``model(x)``; a one-image batch in training runs with batch norm in eval mode (BatchNorm1d needs two)."""
    if len(x) > 1 or not model.training:
        return model(x)
    model.eval()
    try:
        return model(x)
    finally:
        model.train()


def squared_errors(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of squared errors, (N,)."""
    return (x - x_hat).pow(2).flatten(1).sum(1)


def l2_errors(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norm of the error (not squared), (N,): the terms of RSRAE's l2,1 reconstruction loss."""
    return (x - x_hat).flatten(1).norm(dim=1)


def drae_split(errors: torch.Tensor) -> tuple[int, torch.Tensor]:
    """DRAE's self-adaptive threshold (Otsu-like): sort the errors, split them into the k smallest ("inliers")
    and the rest, and pick the k in 1..B-1 that minimises h = within-class scatter / total scatter.

    Returns (k, h) with h differentiable in ``errors`` for that fixed split. The search runs on detached
    float64 cumulative sums (centred first, for precision); ties go to the smallest k, as in the reference
    code's strict ``<``. For B < 2 or equal errors there is no split: (B, 0).
    """
    n = len(errors)
    e = errors.flatten()
    centred = e - e.mean()
    total = centred.pow(2).sum()
    if n < 2 or float(total.detach()) <= 0.0:
        return n, e.new_zeros(())
    s = torch.sort(e.detach().double()).values
    s = s - s.mean()
    k = torch.arange(1, n, dtype=torch.float64, device=s.device)
    c1, c2 = torch.cumsum(s, 0)[:-1], torch.cumsum(s * s, 0)[:-1]
    t1, t2 = s.sum(), (s * s).sum()
    within = (c2 - c1 ** 2 / k) + ((t2 - c2) - (t1 - c1) ** 2 / (n - k))
    best = int(torch.argmin(within)) + 1  # the total scatter is the same for every k
    sorted_e = torch.sort(e).values
    low, high = sorted_e[:best], sorted_e[best:]
    h = ((low - low.mean()).pow(2).sum() + (high - high.mean()).pow(2).sum()) / total
    return best, h


def drae_loss(errors: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """DRAE objective of a batch: mean error of the "inlier" side of the adaptive split + ``lam`` * h."""
    k, h = drae_split(errors)
    return torch.sort(errors.flatten()).values[:k].mean() + lam * h


def prox_l21(residual: torch.Tensor, tau: float) -> torch.Tensor:
    """Proximal operator of ``tau * ||S||_{2,1}`` with one group per sample (row = a sample's flattened values):
    group soft-thresholding, ``S_i = max(0, 1 - tau / ||r_i||_2) r_i``."""
    norms = residual.flatten(1).norm(dim=1)
    factor = torch.where(norms > tau, 1 - tau / norms.clamp_min(1e-30), torch.zeros_like(norms))
    return residual * factor.view(-1, *([1] * (residual.ndim - 1)))


def rsr_pca_loss(z: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """RSRAE's first RSR term for codes ``z`` (B, D) and the RSR matrix ``A`` (d, D): mean_i ||z_i - A^T A z_i||_2."""
    return (z - z @ A.t() @ A).norm(dim=1).mean()


def rsr_proj_loss(A: torch.Tensor) -> torch.Tensor:
    """RSRAE's second RSR term: ||A A^T - I_d||_F^2 (A of shape (d, D))."""
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    return (A @ A.t() - eye).pow(2).sum()


def rsr_losses(z: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both RSR terms: (``rsr_pca_loss(z, A)``, ``rsr_proj_loss(A)``)."""
    return rsr_pca_loss(z, A), rsr_proj_loss(A)


# ------------------------------------------------------------------------------------------------ CAE family
class CAE(OutlierDetector):
    """CAE (supplement item (1)): the deep CAE trained with the MSE loss; score = per-sample sum of squared
    reconstruction errors (the reference code's 1 - minmax(SSE) normality, with the sign flipped)."""

    def __init__(self, *, epochs: int = 250, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 5e-4,
                 widths: Sequence[int] = (64, 128, 256), code: int = 256, device: str = "auto", seed: int = 0,
                 progress: bool = False, data_parallel: bool = True):
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.widths, self.code = widths, code
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    def _train_settings(self, epochs: int | None = None) -> TrainSettings:
        return TrainSettings(epochs=self.epochs if epochs is None else epochs, batch_size=self.batch_size,
                             optimizer="adam", lr=self.lr, weight_decay=self.weight_decay, progress=self.progress,
                             data_parallel=self.data_parallel)

    def _build(self, x: torch.Tensor) -> DeepCAE:
        return DeepCAE(x.shape[1], widths=tuple(self.widths), code=self.code, size=x.shape[-1])

    def _loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x = batch["image"]
        return F.mse_loss(forward(model, x), x)

    def fit(self, X: Any) -> "CAE":
        x = as_images(X)
        generator = seed_everything(self.seed)
        self.device_ = resolve_device(self.device)
        self.model_ = self._build(x)
        self.history_ = train(self.model_, self._loss, ArrayData({"image": x}), self._train_settings(),
                              device=self.device_, generator=generator, desc=type(self).__name__)
        self.decision_scores_ = self.decision_function(x)
        return self

    def _apply(self, fn, X: Any) -> np.ndarray:
        self._check_fitted("model_")
        self.model_.eval()
        return predict(fn, ArrayData({"image": as_images(X)}), device=self.device_)

    def reconstruction_errors(self, X: Any) -> np.ndarray:
        """Per-sample sum of squared reconstruction errors."""
        return self._apply(lambda b: squared_errors(b["image"], self.model_(b["image"])), X).astype(np.float64)

    def encode(self, X: Any) -> np.ndarray:
        """The 256-d tanh codes (``DeepCAE.encode``), (N, code)."""
        return self._apply(lambda b: self.model_.encode(b["image"]), X)

    def decision_function(self, X: Any) -> np.ndarray:
        return self.reconstruction_errors(X)


class CAEIF(OutlierDetector):
    """CAE-IF (supplement item (2)): a :class:`CAE` trained as above (composition: ``cae_``), then scikit-learn's
    IsolationForest on its 256-d codes; score = -IF.decision_function (higher = more anomalous).

    ``contamination`` is the paper's p = rho (the outlier ratio; the bench passes it), "auto" by default. It only
    shifts IF's offset, not the ranking. Other IF settings are scikit-learn's defaults, except ``random_state``,
    which is ``seed`` (so that the same seed gives the same scores).
    """

    def __init__(self, *, contamination: float | str = "auto", epochs: int = 250, batch_size: int = 128,
                 lr: float = 1e-3, weight_decay: float = 5e-4, widths: Sequence[int] = (64, 128, 256),
                 code: int = 256, device: str = "auto", seed: int = 0, progress: bool = False,
                 data_parallel: bool = True):
        self.contamination = contamination
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.widths, self.code = widths, code
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    def fit(self, X: Any) -> "CAEIF":
        x = as_images(X)
        self.cae_ = CAE(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                        widths=self.widths, code=self.code, device=self.device, seed=self.seed,
                        progress=self.progress, data_parallel=self.data_parallel).fit(x)
        self.forest_ = IsolationForest(contamination=self.contamination, random_state=self.seed)
        self.forest_.fit(self.cae_.encode(x))
        self.decision_scores_ = self.decision_function(x)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        self._check_fitted("forest_")
        return -self.forest_.decision_function(self.cae_.encode(X)).astype(np.float64)


class DRAE(CAE):
    """DRAE (Xia et al., ICCV 2015; supplement item (3)): the CAE trained with the discriminative reconstruction
    objective, lambda = 0.1, other settings as CAE; score = per-sample sum of squared errors.

    Per batch (``drae_loss``): e_i = per-sample sum of squared errors; the errors are split by the self-adaptive
    threshold that minimises h = (within-class scatter of the two groups) / (total scatter) over all B-1 splits of
    the sorted errors (Otsu's criterion); the loss is J = mean of the errors below the threshold + lambda * h, h
    differentiated with the split held fixed. This is the published objective (reconstruct the inliers, make the
    error distribution bimodal) as the E3Outlier reference code implements it (``DRAELossAutograd``), vectorised
    (cumulative sums instead of its O(B^2) loop). Choices: the first term is the inlier *mean*, not a sum (the
    reference code's form; with summed-pixel errors of this size, lambda * h is a small term next to it); the split
    is chosen by h alone, then J is evaluated at it. A one-image batch, or a batch of equal errors, has no split:
    J is its mean error.
    """

    def __init__(self, *, lam: float = 0.1, epochs: int = 250, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 5e-4, widths: Sequence[int] = (64, 128, 256), code: int = 256,
                 device: str = "auto", seed: int = 0, progress: bool = False, data_parallel: bool = True):
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, widths=widths,
                         code=code, device=device, seed=seed, progress=progress, data_parallel=data_parallel)
        self.lam = lam

    def _loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x = batch["image"]
        return drae_loss(squared_errors(x, forward(model, x)), self.lam)


RDAE_SCORES = ("residual", "s_norm", "reconstruction")
RDAE_SCALINGS = ("n_samples", "none")


class RDAE(CAE):
    """RDAE with l2,1 regularisation (Zhou & Paffenroth, KDD 2017; supplement item (5)): X = L + S, alternating
    ``epochs`` (20) outer iterations of: train the CAE (MSE, Adam as CAE, one optimiser kept throughout, no
    re-initialisation, as the reference code) on L = X - S for ``inner_epochs`` (1) epochs; then
    S = prox_{tau ||.||_{2,1}}(X - AE(L)), the group soft-thresholding of each sample's residual
    (``prox_l21``; S starts at 0). The reference E3Outlier code's prox has a bug that makes S = 0 (then RDAE is a
    CAE trained for 20 epochs); this is the correct operator.

    Threshold scale (``lambda_scaling``): the RDA authors' outlier experiment shrinks with lambda * N (N = number of
    samples; it comes from a per-sample-mean AE loss next to a summed l2,1 penalty) on pixels in [0, 1]. Our
    pixels span [-1, 1], twice the range, so ``"n_samples"`` (default) uses tau = 2 * lambda * N on our scale,
    i.e. the authors' lambda * N on the [0, 1] scale. ``"none"`` uses tau = lambda on our scale, as the E3Outlier
    code does (then almost nothing is shrunk: S ~ the whole residual).

    Score (``score``): with r_i = X_i - AE(L_i) the residual of the last S-update, ||S_i|| = max(0, ||r_i|| - tau):
    - ``"residual"`` (default): ||r_i||_2, the norm of the outlier part before shrinkage. It ranks exactly as
      ||S_i|| where S_i != 0 and keeps the order among the samples S puts to zero (||S_i|| ties them all at 0);
    - ``"s_norm"``: ||S_i||_2, the outlier part itself;
    - ``"reconstruction"``: ||L_i - AE(L_i)||^2 with L = X - S, the E3Outlier reference code's score.
    The fitted set is recognised by its values (transductive: S exists only for it); for other images S is
    inferred by one S-update with the trained AE and S = 0 (L = X), with the fitted tau.

    Behaviour to know: an AE that reconstructs L well gives S_new ~ prox(S_old), so S shrinks by only tau per
    outer iteration; when tau is small next to the residuals of the first update (small N, or few training steps
    per epoch, when the first S-update sees a barely trained AE) S keeps that first residual. On digits (N = 197)
    ``"reconstruction"`` is then inverted (AUROC 0.45: S has taken the outliers out of L) while ``"residual"``
    gives 0.90.
    """

    def __init__(self, *, lam: float = 0.00065, epochs: int = 20, inner_epochs: int = 1,
                 lambda_scaling: str = "n_samples", score: str = "residual", batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 5e-4, widths: Sequence[int] = (64, 128, 256), code: int = 256,
                 device: str = "auto", seed: int = 0, progress: bool = False, data_parallel: bool = True):
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, widths=widths,
                         code=code, device=device, seed=seed, progress=progress, data_parallel=data_parallel)
        self.lam, self.inner_epochs, self.lambda_scaling, self.score = lam, inner_epochs, lambda_scaling, score

    def _loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        low_rank = batch["image"] - batch["sparse"]
        return F.mse_loss(forward(model, low_rank), low_rank)

    def _decompose(self, x: torch.Tensor, sparse: torch.Tensor) -> dict[str, np.ndarray]:
        """One S-update from the current S: the residuals' norms, the new S (in place) and the scores of it."""
        self.model_.eval()
        recon = torch.from_numpy(predict(lambda b: self.model_(b["image"] - b["sparse"]),
                                         ArrayData({"image": x, "sparse": sparse}), device=self.device_))
        residual = x - recon
        sparse.copy_(prox_l21(residual, self.tau_))
        low_rank = x - sparse
        self.model_.eval()
        rec_err = predict(lambda b: squared_errors(b["image"], self.model_(b["image"])),
                          ArrayData({"image": low_rank}), device=self.device_)
        return {"residual": residual.flatten(1).norm(dim=1).double().numpy(),
                "s_norm": sparse.flatten(1).norm(dim=1).double().numpy(),
                "reconstruction": rec_err.astype(np.float64)}

    def fit(self, X: Any) -> "RDAE":
        if self.score not in RDAE_SCORES:
            raise ValueError(f"unknown score {self.score!r}; expected one of {RDAE_SCORES}")
        if self.lambda_scaling not in RDAE_SCALINGS:
            raise ValueError(f"unknown lambda_scaling {self.lambda_scaling!r}; expected one of {RDAE_SCALINGS}")
        if self.epochs < 1 or self.inner_epochs < 1:
            raise ValueError(f"epochs and inner_epochs must be positive, got {self.epochs}, {self.inner_epochs}")
        x = as_images(X)
        generator = seed_everything(self.seed)
        self.device_ = resolve_device(self.device)
        self.tau_ = float(self.lam * 2 * len(x) if self.lambda_scaling == "n_samples" else self.lam)
        self.model_ = self._build(x)
        sparse = torch.zeros_like(x)  # ArrayData keeps this very tensor: batches see every S-update
        outcome: dict[str, np.ndarray] = {}

        def update(epoch: int) -> None:
            if (epoch + 1) % self.inner_epochs == 0:
                outcome.update(self._decompose(x, sparse))

        self.history_ = train(self.model_, self._loss, ArrayData({"image": x, "sparse": sparse}),
                              self._train_settings(self.epochs * self.inner_epochs), device=self.device_,
                              generator=generator, desc="RDAE", on_epoch_end=update)
        self.sparse_ = sparse
        self.sparse_fraction_ = float(np.mean(outcome["s_norm"] > 0))  # share of samples with S_i != 0
        self.fitted_scores_ = outcome
        self.decision_scores_ = outcome[self.score]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """New data: its robust decomposition from S = 0 (the fitted set's own, with the S learned in training, is
        ``decision_scores_``)."""
        self._check_fitted("fitted_scores_")
        x = as_images(X)
        return self._decompose(x, torch.zeros_like(x))[self.score]


# --------------------------------------------------------------------------------------------------- RSRAE
class RSRAutoencoder(nn.Module):
    """DeepCAE with RSRAE's linear RSR layer: z = encode(x) (D = 256), z~ = A z (d), l2-normalised (the RSRAE code's
    default ``renormalization``), lifted by a linear layer d -> D, then ``DeepCAE.decode``.
    ``forward`` returns (z, z~, x_hat)."""

    def __init__(self, in_channels: int, intrinsic: int = 10, widths: Sequence[int] = (64, 128, 256),
                 code: int = 256, size: int = 32, normalize: bool = True):
        super().__init__()
        self.cae = DeepCAE(in_channels, widths=tuple(widths), code=code, size=size)
        self.A = nn.Parameter(torch.randn(intrinsic, code))  # the RSRAE code's random-normal init
        self.lift = nn.Linear(intrinsic, code)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.cae.encode(x)
        z_tilde = z @ self.A.t()
        h = F.normalize(z_tilde, dim=1) if self.normalize else z_tilde
        return z, z_tilde, self.cae.decode(self.lift(h))


RSRAE_MODES = ("separate", "joint")
RSRAE_SCORES = ("l2", "cosine")


class RSRAE(OutlierDetector):
    """RSRAE (Lai, Zou & Lerman, ICLR 2020; supplement item (8)): encoder -> z (256) -> RSR layer z~ = A z,
    A in R^{d x 256}, d = 10 -> decoder (see :class:`RSRAutoencoder`). Adam lr 0.00025, weight decay 0.0005,
    batch 128, 250 epochs (the supplement's CAE budget; the RSRAE code uses 200).

    Losses (batch means over samples): L_AE = mean_i ||x_i - x_hat_i||_2 (the l2,1 norm, p = 1);
    L_RSR = lambda1 * mean_i ||z_i - A^T A z_i||_2 + lambda2 * ||A A^T - I_d||_F^2 (``rsr_losses``).

    ``mode="separate"`` (RSRAE, the default; E3Outlier: "optimized in a separated manner"): per batch, as the
    RSRAE code (``all_alt``, ``enforce_proj``), three Adam steps in turn, each with its own optimiser: L_AE on all
    weights; lambda2 * ||A A^T - I||_F^2 on A; lambda1 * mean ||z - A^T A z|| on the encoder and A (a fresh
    forward). The two RSR optimisers use ``rsr_lr_factor`` (10, the code's) times lr. The first step is the shared
    loop's, the other two run in its ``on_step_end``. ``lambda1 = lambda2 = 1`` by default here: the code's separate steps are unweighted.
    ``mode="joint"`` (RSRAE+): one Adam on L_AE + lambda1 RSR1 + lambda2 RSR2 through the shared loop, lambda1 =
    lambda2 = 0.1 by default (the RSRAE paper's). ``lambda1``/``lambda2`` = None picks these mode defaults.

    Score: ``"l2"`` (default) ||x - x_hat||_2 per sample, through the RSR layer (the model that was trained; the
    E3Outlier reference code scored decode(encode(x)), bypassing it); ``"cosine"``: minus the cosine similarity of x
    and x_hat, the RSRAE code's score. Deviations: the E3Outlier port's RSR2 target (a matrix of ones) and its
    channel-wise l2,1 norm are not copied; the RSRAE code's per-sample l2 normalisation of the inputs is not done
    (the supplement feeds [-1, 1] images to every method); the d -> 256 linear ``lift`` before DeepCAE's decoder
    stands in for the RSRAE decoder's dense layer from d.
    """

    def __init__(self, *, intrinsic: int = 10, mode: str = "separate", lambda1: float | None = None,
                 lambda2: float | None = None, rsr_lr_factor: float = 10.0, normalize_code: bool = True,
                 score: str = "l2", epochs: int = 250, batch_size: int = 128, lr: float = 0.00025,
                 weight_decay: float = 0.0005, widths: Sequence[int] = (64, 128, 256), code: int = 256,
                 device: str = "auto", seed: int = 0, progress: bool = False, data_parallel: bool = True):
        self.intrinsic, self.mode, self.lambda1, self.lambda2 = intrinsic, mode, lambda1, lambda2
        self.rsr_lr_factor, self.normalize_code, self.score = rsr_lr_factor, normalize_code, score
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.widths, self.code = widths, code
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    def _lambdas(self) -> tuple[float, float]:
        default = 1.0 if self.mode == "separate" else 0.1
        return (default if self.lambda1 is None else self.lambda1, default if self.lambda2 is None else self.lambda2)

    def _joint_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x = batch["image"]
        z, _, x_hat = forward(model, x)
        pca, proj = rsr_losses(z, model.A)
        l1, l2 = self._lambdas()
        return l2_errors(x, x_hat).mean() + l1 * pca + l2 * proj

    def _train_separate(self, x: torch.Tensor, generator: torch.Generator) -> list[float]:
        """The loop's Adam step on L_AE, then in its ``on_step_end`` one step on RSR2 (A only) and one on RSR1
        (encoder and A), each with its own Adam at ``lr * rsr_lr_factor``. Returns the mean L_AE of each epoch."""
        model, l1, l2 = self.model_, *self._lambdas()
        encoder = list(model.cae.encoder.parameters())
        adam = dict(weight_decay=self.weight_decay)
        opt_proj = torch.optim.Adam([model.A], lr=self.lr * self.rsr_lr_factor, **adam)
        opt_pca = torch.optim.Adam(encoder + [model.A], lr=self.lr * self.rsr_lr_factor, **adam)

        def reconstruction(model: nn.Module, batch: Batch) -> torch.Tensor:
            xb = batch["image"]
            return l2_errors(xb, forward(model, xb)[2]).mean()

        def subspace_steps(step: int, batch: Batch) -> None:
            opt_proj.zero_grad(set_to_none=True)
            (l2 * rsr_proj_loss(model.A)).backward()
            opt_proj.step()
            z = model.cae.encode(batch["image"])
            opt_pca.zero_grad(set_to_none=True)
            (l1 * rsr_pca_loss(z, model.A)).backward()
            opt_pca.step()

        settings = TrainSettings(epochs=self.epochs, batch_size=self.batch_size, optimizer="adam", lr=self.lr,
                                 weight_decay=self.weight_decay, progress=self.progress,
                                 data_parallel=self.data_parallel)
        return train(model, reconstruction, ArrayData({"image": x}), settings, device=self.device_,
                     generator=generator, desc="RSRAE", on_step_end=subspace_steps)

    def fit(self, X: Any) -> "RSRAE":
        if self.mode not in RSRAE_MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {RSRAE_MODES}")
        if self.score not in RSRAE_SCORES:
            raise ValueError(f"unknown score {self.score!r}; expected one of {RSRAE_SCORES}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        x = as_images(X)
        generator = seed_everything(self.seed)
        self.device_ = resolve_device(self.device)
        self.model_ = RSRAutoencoder(x.shape[1], self.intrinsic, self.widths, self.code, x.shape[-1],
                                     self.normalize_code).to(self.device_)
        if self.mode == "joint":
            settings = TrainSettings(epochs=self.epochs, batch_size=self.batch_size, optimizer="adam", lr=self.lr,
                                     weight_decay=self.weight_decay, progress=self.progress,
                                     data_parallel=self.data_parallel)
            self.history_ = train(self.model_, self._joint_loss, ArrayData({"image": x}), settings,
                                  device=self.device_, generator=generator, desc="RSRAE+")
        else:
            self.history_ = self._train_separate(x, generator)
        self.decision_scores_ = self.decision_function(x)
        return self

    def _score_batch(self, batch: Batch) -> torch.Tensor:
        x = batch["image"]
        x_hat = self.model_(x)[2]
        if self.score == "l2":
            return l2_errors(x, x_hat)
        return -F.cosine_similarity(x.flatten(1), x_hat.flatten(1), dim=1, eps=1e-6)

    def decision_function(self, X: Any) -> np.ndarray:
        self._check_fitted("model_")
        self.model_.eval()
        return predict(self._score_batch, ArrayData({"image": as_images(X)}), device=self.device_).astype(np.float64)
