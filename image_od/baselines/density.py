"""Density baselines of the E3Outlier comparison (TPAMI supplement Sec. 5, "competing methods" (4) and (6)): DSEBM
and DAGMM, both built on the supplement's deep CAE (:class:`image_od.networks.generators.DeepCAE`) and trained by the shared loop.

The supplement runs both through the Keras code of Golan & El-Yaniv (NeurIPS 2018, its ref. [3]); the E3Outlier
repository (``demonzyj56/E3Outlier``, ``outlier_experiments.py``) holds the DAGMM it ran. Where that code and the
original papers differ, the docstrings below say which one we follow.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from image_od.data.samples import ArrayData, Batch
from image_od.detector import OutlierDetector, image_array
from image_od.engine.training import TrainSettings, predict, resolve_device, seed_everything, train
from image_od.networks.generators import DeepCAE

ACTIVATIONS = ("softplus", "relu")


def as_images(X: np.ndarray) -> np.ndarray:
    """``X`` (checked by ``detector.image_array``) as float32 (N, C, H, W), the layout of
    ``protocol.to_model_input``."""
    return np.asarray(image_array(X), dtype=np.float32)


def _linear_code(cae: DeepCAE) -> nn.Sequential:
    """The CAE's encoder without its final tanh: conv blocks, flatten, fc(4096, code)."""
    if not isinstance(cae.encoder[-1], nn.Tanh):
        raise TypeError("DeepCAE.encoder is expected to end with its tanh")
    return cae.encoder[:-1]


# ------------------------------------------------------------------------------------------------------------ DSEBM
class EnergyNet(nn.Module):
    """The DSEBM energy of an image: ``E(x) = 0.5 * ||x - b'||^2 - sum_j act(f_j(x))``.

    ``b'`` is a learned bias image; ``f`` is the deep CAE's encoder (three conv-BN-ReLU blocks, flatten, fc to
    ``code`` units) without its tanh; ``act`` is softplus (DSEBM paper, Zhai et al. 2016, Sec. 3.2) or ReLU (the
    reference code of Golan & El-Yaniv, ``representation_activation='relu'``).
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 128, 256), code: int = 256, size: int = 32,
                 activation: str = "softplus"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        self.features = _linear_code(DeepCAE(in_channels, widths=widths, code=code, size=size))
        self.bias = nn.Parameter(torch.zeros(in_channels, size, size))
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        act = F.softplus(f) if self.activation == "softplus" else F.relu(f)
        return 0.5 * (x - self.bias).pow(2).flatten(1).sum(1) - act.sum(1)


def score_matching_loss(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                        noise: torch.Tensor) -> torch.Tensor:
    """Denoising score matching (DSEBM Sec. 3.3): with ``x~ = x + noise``, the mean over all elements of
    ``(x - (x~ - dE/dx~))^2``. ``energy`` maps a batch to per-sample energies; the gradient is taken with
    ``create_graph=True`` so that the loss can be differentiated w.r.t. the energy's parameters."""
    noisy = (x + noise).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(noisy).sum(), noisy, create_graph=True)
    return (x - (noisy - grad)).pow(2).mean()


class DSEBM(OutlierDetector):
    """Deep structured energy based model (Zhai et al., ICML 2016), as the E3Outlier supplement runs it.

    Energy (see :class:`EnergyNet`): ``E(x) = 0.5 ||x - b'||^2 - sum_j softplus(f_j(x))``, ``f`` the supplement's
    deep CAE encoder (fc to 256 units, no tanh). Training: denoising score matching with Gaussian noise of std
    ``noise`` (:func:`score_matching_loss`), Adam, ``epochs`` = 200 (supplement), batch 128. Score: the energy
    ``E(x)`` with batch norm in eval mode (higher = more anomalous; the DSEBM paper's energy score).

    Choices and deviations:
    - ``activation="softplus"`` follows the DSEBM paper; the reference code the supplement ran uses ReLU
      (``activation="relu"``).
    - ``noise=0.5``, batch 128, Adam lr 1e-3 with eps 1e-7 (Keras' Adam) and the MSE averaged over all elements
      are taken from that reference code; the supplement gives only the 200 epochs.
    - The encoder's widths (64, 128, 256) are the reference code's (and ``DeepCAE``'s default).
    - As in the reference code, batch norm runs in training mode during training, so ``dE/dx~`` of a sample also
      flows through the batch statistics.
    - Not tried under torchrun: the loss takes ``torch.autograd.grad`` (w.r.t. the input) inside the forward that
      the shared loop wraps in DistributedDataParallel.
    """

    def __init__(self, *, epochs: int = 200, batch_size: int = 128, lr: float = 1e-3, noise: float = 0.5,
                 activation: str = "softplus", widths: Sequence[int] = (64, 128, 256), code: int = 256,
                 device: str = "auto", seed: int = 0, progress: bool = False, data_parallel: bool = True):
        self.epochs, self.batch_size, self.lr, self.noise = epochs, batch_size, lr, noise
        self.activation, self.widths, self.code = activation, widths, code
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    def fit(self, X: np.ndarray) -> DSEBM:
        X = as_images(X)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {ACTIVATIONS}")
        generator = seed_everything(self.seed)
        self.device_ = resolve_device(self.device)
        self.net_ = EnergyNet(X.shape[1], tuple(self.widths), self.code, X.shape[-1], self.activation)
        noise_generator = torch.Generator().manual_seed(self.seed + 1)

        def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
            x = batch["image"]
            noise = torch.randn(x.shape, generator=noise_generator).to(x.device) * self.noise
            return score_matching_loss(model, x, noise)

        settings = TrainSettings(epochs=self.epochs, batch_size=self.batch_size, optimizer="adam", lr=self.lr,
                                 eps=1e-7, progress=self.progress, data_parallel=self.data_parallel)
        self.history_ = train(self.net_, loss, ArrayData({"image": X}), settings, device=self.device_,
                              generator=generator, desc="train DSEBM")
        self.decision_scores_ = self.decision_function(X)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The energy ``E(x)`` of every image (higher = more anomalous)."""
        self._check_fitted("net_")
        self.net_.eval()
        return predict(lambda b: self.net_(b["image"]), ArrayData({"image": as_images(X)}),
                       device=self.device_, progress=self.progress)


# ------------------------------------------------------------------------------------------------------------ DAGMM
def reconstruction_features(x: torch.Tensor, x_hat: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """DAGMM's z_r (Zong et al. 2018, Eq. 2): relative Euclidean distance ``||x - x^|| / ||x||`` and cosine
    similarity of x and x^, (N, 2)."""
    x, x_hat = x.flatten(1), x_hat.flatten(1)
    rel = ((x - x_hat).pow(2).sum(1) / x.pow(2).sum(1).clamp_min(eps)).clamp_min(eps).sqrt()
    cos = (x * x_hat).sum(1) / (x.norm(dim=1) * x_hat.norm(dim=1)).clamp_min(eps)
    return torch.stack([rel, cos], 1)


def gmm_parameters(z: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GMM parameters from soft memberships (DAGMM Eq. 5): ``phi_k = mean_i gamma_ik``, ``mu_k`` the
    gamma-weighted mean, ``Sigma_k`` the gamma-weighted covariance of z around ``mu_k``; shapes (K,), (K,D),
    (K,D,D)."""
    n_k = gamma.sum(0).clamp_min(torch.finfo(gamma.dtype).tiny)
    phi = gamma.sum(0) / len(z)
    mu = gamma.T @ z / n_k[:, None]
    diff = z[None] - mu[:, None]  # (K, N, D)
    sigma = torch.einsum("nk,kni,knj->kij", gamma, diff, diff) / n_k[:, None, None]
    return phi, mu, sigma


def _cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Cholesky factors of (K,D,D) covariances; a factor that fails gets a growing diagonal jitter (1e-6 of the
    mean variance, times 10 per try)."""
    chol, info = torch.linalg.cholesky_ex(cov)
    if not bool(info.any()):
        return chol
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp_min(1e-12)[:, None, None]
    for power in range(-6, 3):
        chol, info = torch.linalg.cholesky_ex(cov + 10.0 ** power * scale * eye)
        if not bool(info.any()):
            return chol
    raise FloatingPointError("DAGMM: a mixture covariance is not positive definite even after jitter")


def sample_energy(z: torch.Tensor, phi: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """DAGMM's sample energy (Eq. 6), ``-log sum_k phi_k N(z; mu_k, Sigma_k)``, per row of z (N,), computed with
    Cholesky factors and logsumexp (``sigma`` is used as given: add any diagonal epsilon before)."""
    chol = _cholesky(sigma)
    diff = (z[None] - mu[:, None]).transpose(1, 2)  # (K, D, N)
    maha = torch.linalg.solve_triangular(chol, diff, upper=False).pow(2).sum(1)  # (K, N)
    logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
    log_norm = -0.5 * (maha + logdet[:, None] + z.shape[1] * math.log(2 * math.pi))
    log_phi = phi.clamp_min(torch.finfo(phi.dtype).tiny).log()
    return -torch.logsumexp(log_phi[:, None] + log_norm, 0)


def dagmm_objective(x: torch.Tensor, x_hat: torch.Tensor, energy: torch.Tensor, sigma: torch.Tensor,
                    lambda_energy: float, lambda_cov: float) -> torch.Tensor:
    """DAGMM's objective (Eq. 7): mean squared reconstruction error (over all elements, Keras' ``mse``)
    + ``lambda_energy`` * mean sample energy + ``lambda_cov`` * sum_k sum_j 1 / Sigma_k[j, j]."""
    penalty = (1.0 / sigma.diagonal(dim1=-2, dim2=-1)).sum()
    return (x - x_hat).pow(2).mean() + lambda_energy * energy.mean() + lambda_cov * penalty


class DAGMMNet(nn.Module):
    """Compression network (the deep CAE with a linear ``code``-d bottleneck) and estimation network (MLP with
    tanh and dropout, softmax over ``n_components``). ``forward`` -> (x^, z = [z_c, z_r], gamma)."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 128, 256), code: int = 5, size: int = 32,
                 n_components: int = 3, hidden: Sequence[int] = (64, 10), dropout: float = 0.5):
        super().__init__()
        self.cae = DeepCAE(in_channels, widths=widths, code=code, size=size)
        _linear_code(self.cae)  # checks the layout that forward relies on
        layers: list[nn.Module] = []
        d = code + 2
        for h in hidden:
            layers += [nn.Linear(d, h), nn.Tanh(), nn.Dropout(dropout)]
            d = h
        layers.append(nn.Linear(d, n_components))
        self.estimation = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_c = _linear_code(self.cae)(x)
        x_hat = self.cae.decode(z_c)
        z = torch.cat([z_c, reconstruction_features(x, x_hat)], 1)
        return x_hat, z, torch.softmax(self.estimation(z), 1)


class DAGMM(OutlierDetector):
    """Deep autoencoding Gaussian mixture model (Zong et al., ICLR 2018), as the E3Outlier supplement runs it.

    z = [z_c, ||x - x^|| / ||x||, cos(x, x^)] with z_c the CAE code; gamma = softmax(MLP(z)); per batch the GMM
    parameters come from gamma (:func:`gmm_parameters`, in float64) and the loss is :func:`dagmm_objective` with
    ``lambda_energy`` = 0.1 and ``lambda_cov`` = 0.005 (supplement), Adam lr 1e-4, batch 1024, 200 epochs
    (supplement). After training, phi, mu and Sigma are estimated once over the whole fitted set (eval mode) and
    the score is the sample energy (:func:`sample_energy`; higher = more anomalous).

    Choices and deviations:
    - Compression network: the supplement's deep CAE with a **5-d linear code** and **K = 3** components and the
      estimation MLP 64-tanh-dropout(0.5)-10-tanh-dropout(0.5)-K-softmax, all from the DAGMM the E3Outlier
      authors ran (``outlier_experiments.py``, after Golan & El-Yaniv). A 256-d code would make each batch's
      258x258 covariances rank-deficient; the DAGMM paper uses 1- or 2-d codes and K = 2 or 4 (4 on KDDCUP).
    - ``cov_eps`` (1e-6) is added to every covariance diagonal (the reference adds Keras' epsilon, 1e-7); a factor
      that still fails gets more jitter (see ``_cholesky``). The energy uses Cholesky factors and logsumexp
      instead of the reference's matrix inverse, determinant and ``+ 1e-7`` inside the log.
    - The test-time GMM is fitted on the whole set, as the DAGMM paper says; the reference keeps the last
      training batch's parameters.
    - Adam eps 1e-7 (Keras' Adam, as the reference).
    """

    def __init__(self, *, epochs: int = 200, batch_size: int = 1024, lr: float = 1e-4, lambda_energy: float = 0.1,
                 lambda_cov: float = 0.005, code: int = 5, n_components: int = 3, hidden: Sequence[int] = (64, 10),
                 dropout: float = 0.5, cov_eps: float = 1e-6, widths: Sequence[int] = (64, 128, 256),
                 device: str = "auto", seed: int = 0, progress: bool = False, data_parallel: bool = True):
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.lambda_energy, self.lambda_cov = lambda_energy, lambda_cov
        self.code, self.n_components, self.hidden, self.dropout = code, n_components, hidden, dropout
        self.cov_eps, self.widths = cov_eps, widths
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    def _gmm(self, z: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        phi, mu, sigma = gmm_parameters(z.double(), gamma.double())
        eye = torch.eye(z.shape[1], dtype=sigma.dtype, device=sigma.device)
        return phi, mu, sigma + self.cov_eps * eye

    def fit(self, X: np.ndarray) -> DAGMM:
        X = as_images(X)
        generator = seed_everything(self.seed)
        self.device_ = resolve_device(self.device)
        self.net_ = DAGMMNet(X.shape[1], tuple(self.widths), self.code, X.shape[-1], self.n_components,
                             tuple(self.hidden), self.dropout)

        def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
            x = batch["image"]
            x_hat, z, gamma = model(x)
            phi, mu, sigma = self._gmm(z, gamma)
            energy = sample_energy(z.double(), phi, mu, sigma)
            return dagmm_objective(x, x_hat, energy, sigma, self.lambda_energy, self.lambda_cov).float()

        settings = TrainSettings(epochs=self.epochs, batch_size=self.batch_size, optimizer="adam", lr=self.lr,
                                 eps=1e-7, progress=self.progress, data_parallel=self.data_parallel)
        self.history_ = train(self.net_, loss, ArrayData({"image": X}), settings, device=self.device_,
                              generator=generator, desc="train DAGMM")
        z, gamma = self._embed(X)
        self.phi_, self.mu_, self.sigma_ = self._gmm(z, gamma)
        self.decision_scores_ = sample_energy(z.double(), self.phi_, self.mu_, self.sigma_).numpy()
        return self

    def _embed(self, X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """z and gamma of every image (eval mode), on the CPU."""
        self.net_.eval()
        out = torch.from_numpy(predict(lambda b: torch.cat(self.net_(b["image"])[1:], 1),
                                       ArrayData({"image": as_images(X)}),
                                       device=self.device_, progress=self.progress))
        d = self.code + 2
        return out[:, :d], out[:, d:]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The sample energy under the GMM fitted on the whole training set (higher = more anomalous)."""
        self._check_fitted("sigma_")
        z, _ = self._embed(X)
        return sample_energy(z.double(), self.phi_, self.mu_, self.sigma_).numpy()
