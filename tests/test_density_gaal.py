"""DSEBM and DAGMM (image_od.baselines.density) and MO-GAAL (image_od.baselines.gaal): API on tiny sets, score direction,
determinism, the losses and energies against direct formulas, and one real run each on scikit-learn digits."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.metrics import roc_auc_score

from image_od.baselines.density import (
    DAGMM,
    DSEBM,
    EnergyNet,
    dagmm_objective,
    gmm_parameters,
    reconstruction_features,
    sample_energy,
    score_matching_loss,
)
from image_od.baselines.gaal import MOGAAL, generator_targets, noise_split
from tests.image_sets import digits_set

CPU = {"device": "cpu"}
SMALL_CAE = {"widths": (8, 16, 32), **CPU}


def _tiny(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 1, 32, 32)).astype(np.float32)


def _obvious(n_in: int = 60, n_out: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inliers: a bright square on a dark background, with a little noise. Outliers (the last n_out): white noise
    over [-1, 1]. Their norm is lower, so an untrained DSEBM (energy ~ 0.5 ||x||^2) ranks them lowest; they are
    unlike each other, so DAGMM cannot give them a mixture component of their own (as it does with four copies
    of one inverted image)."""
    rng = np.random.default_rng(seed)
    x = np.full((n_in + n_out, 1, 32, 32), -1.0, np.float32)
    x[:, :, 10:22, 10:22] = 1.0
    x += rng.normal(0, 0.05, x.shape).astype(np.float32)
    x[n_in:] = rng.uniform(-1, 1, (n_out, 1, 32, 32))
    return np.clip(x, -1, 1), np.r_[np.zeros(n_in), np.ones(n_out)]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    return digits_set(0)  # 178 zeros + 19 other digits


# ------------------------------------------------------------------------------------------------------------ DSEBM
@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_energy_net_is_the_dsebm_energy(activation):
    torch.manual_seed(0)
    net = EnergyNet(1, (4, 8, 8), code=6, activation=activation).eval()
    with torch.no_grad():
        net.bias.normal_()
    x = torch.randn(3, 1, 32, 32)
    f = net.features(x)
    act = F.softplus(f) if activation == "softplus" else F.relu(f)
    expected = 0.5 * ((x - net.bias) ** 2).sum((1, 2, 3)) - act.sum(1)
    assert torch.allclose(net(x), expected, atol=1e-4)
    assert f.shape == (3, 6)


def test_score_matching_loss_on_a_linear_energy():
    """E(x) = 0.5 ||x - b||^2 - sum softplus(W x + c): dE/dx = (x - b) - W^T sigmoid(W x + c)."""
    g = torch.Generator().manual_seed(0)
    W, c, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((4, 3), (4,), (3,)))
    x, noise = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)

    def energy(W, c, b):
        return lambda v: 0.5 * ((v - b) ** 2).sum(1) - F.softplus(v @ W.T + c).sum(1)

    noisy = x + noise
    grad = (noisy - b) - torch.sigmoid(noisy @ W.T + c) @ W
    expected = ((x - (noisy - grad)) ** 2).mean()
    assert torch.allclose(score_matching_loss(energy(W, c, b), x, noise), expected)
    # create_graph=True: the loss is differentiable w.r.t. the energy's parameters (checked numerically)
    params = tuple(p.clone().requires_grad_(True) for p in (W, c, b))
    assert torch.autograd.gradcheck(lambda *p: score_matching_loss(energy(*p), x, noise), params)


def test_dsebm_fits_and_scores_a_tiny_set():
    x = _tiny()
    model = DSEBM(epochs=2, batch_size=32, code=16, **SMALL_CAE)
    assert model.fit(x) is model
    assert model.decision_scores_.shape == (64,) and np.isfinite(model.decision_scores_).all()
    assert np.allclose(model.decision_function(x), model.decision_scores_)
    assert len(model.history_) == 2
    with pytest.raises(RuntimeError, match="not fitted"):
        DSEBM().decision_function(x)


def test_dsebm_direction_and_determinism():
    x, y = _obvious()
    kw = dict(epochs=6, batch_size=8, lr=3e-2, code=16, **SMALL_CAE)
    scores = DSEBM(**kw).fit(x).decision_scores_
    assert roc_auc_score(y, scores) == 1.0
    assert np.array_equal(scores, DSEBM(**kw).fit(x).decision_scores_)
    assert not np.array_equal(scores, DSEBM(**{**kw, "seed": 1}).fit(x).decision_scores_)


@pytest.mark.slow
def test_dsebm_on_digits():
    x, y = _digits()
    model = DSEBM(epochs=15, batch_size=32, lr=3e-3, code=64, widths=(16, 32, 64), device="cpu").fit(x)
    assert model.history_[-1] < model.history_[0]
    assert roc_auc_score(y, model.decision_scores_) > 0.85  # measured 0.932


# ------------------------------------------------------------------------------------------------------------ DAGMM
def test_reconstruction_features_formula():
    rng = np.random.default_rng(0)
    x, x_hat = rng.normal(size=(2, 4, 1, 3, 3)).astype(np.float32)
    got = reconstruction_features(torch.from_numpy(x), torch.from_numpy(x_hat)).numpy()
    a, b = x.reshape(4, -1), x_hat.reshape(4, -1)
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.allclose(got, np.stack([rel, cos], 1), atol=1e-5)


def test_gmm_parameters_from_soft_memberships():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 3))
    gamma = rng.dirichlet(np.ones(2), 50)
    phi, mu, sigma = (t.numpy() for t in gmm_parameters(torch.from_numpy(z), torch.from_numpy(gamma)))
    for k in range(2):
        g = gamma[:, k]
        m = (g[:, None] * z).sum(0) / g.sum()
        assert np.isclose(phi[k], g.mean())
        assert np.allclose(mu[k], m)
        assert np.allclose(sigma[k], np.cov(z.T, aweights=g, bias=True))


def test_sample_energy_is_the_negative_mixture_log_density():
    phi = np.array([0.3, 0.7])
    mu = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]])
    a = np.array([[1.0, 0.2, 0.0], [0.3, 0.5, 0.1], [0.0, -0.4, 0.8]])
    sigma = np.stack([a @ a.T + 0.1 * np.eye(3), np.diag([0.5, 2.0, 1.0])])
    z = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, -1.0, 0.5], [300.0, -200.0, 100.0]])  # the last: far away
    expected = -logsumexp([np.log(phi[k]) + multivariate_normal(mu[k], sigma[k]).logpdf(z) for k in range(2)], axis=0)
    got = sample_energy(*(torch.from_numpy(t) for t in (z, phi, mu, sigma))).numpy()
    assert np.isfinite(got).all()  # exp(-log density) of the far point underflows; logsumexp does not
    assert np.allclose(got, expected, rtol=1e-10)


def test_dagmm_objective_formula():
    x, x_hat = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)  # mse 1
    energy = torch.tensor([1.0, 3.0])  # mean 2
    sigma = torch.stack([torch.diag(torch.tensor([0.5, 0.25])), torch.diag(torch.tensor([1.0, 2.0]))])  # 2+4+1+.5
    got = dagmm_objective(x, x_hat, energy, sigma, lambda_energy=0.1, lambda_cov=0.005)
    assert torch.isclose(got, torch.tensor(1.0 + 0.1 * 2 + 0.005 * 7.5))


def test_dagmm_fits_and_scores_a_tiny_set():
    x = _tiny()
    model = DAGMM(epochs=2, batch_size=32, **SMALL_CAE)
    assert model.fit(x) is model
    scores = model.decision_scores_
    assert scores.shape == (64,) and np.isfinite(scores).all()
    assert np.allclose(model.decision_function(x), scores)
    assert np.isclose(model.phi_.sum().item(), 1.0) and model.sigma_.shape == (3, 7, 7)
    with pytest.raises(RuntimeError, match="not fitted"):
        DAGMM().decision_function(x)


def test_dagmm_direction_and_determinism():
    x, y = _obvious()
    kw = dict(epochs=10, batch_size=16, lr=1e-3, **SMALL_CAE)
    scores = DAGMM(**kw).fit(x).decision_scores_
    assert roc_auc_score(y, scores) == 1.0
    assert np.array_equal(scores, DAGMM(**kw).fit(x).decision_scores_)
    assert not np.array_equal(scores, DAGMM(**{**kw, "seed": 1}).fit(x).decision_scores_)


@pytest.mark.slow
def test_dagmm_on_digits():
    x, y = _digits()
    model = DAGMM(epochs=30, batch_size=64, lr=1e-3, widths=(16, 32, 64), device="cpu").fit(x)
    assert roc_auc_score(y, model.decision_scores_) > 0.7  # measured 0.792


# ------------------------------------------------------------------------------------------------------------ MO-GAAL
def test_noise_split_follows_the_reference_cut():
    assert noise_split(64, 10) == [10, 9, 8, 7, 6, 5, 4, 3, 2, 10]
    assert noise_split(500, 10) == [90, 81, 72, 63, 54, 45, 36, 27, 18, 14]
    assert noise_split(20, 10) == [0] * 9 + [20]  # fewer than k(k+1)/2: all to the last sub-generator
    assert noise_split(7, 1) == [7]


def test_generator_targets_are_quantiles_of_the_real_scores():
    scores = torch.rand(101, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    targets = generator_targets(scores, 10).numpy()
    assert np.allclose(targets, [np.percentile(scores.numpy(), i / 10 * 100) for i in range(10)])
    assert targets[0] == scores.min().item() and np.all(np.diff(targets) >= 0)


def test_mogaal_fits_and_scores_a_tiny_set():
    x = _tiny()
    model = MOGAAL(epochs_joint=1, epochs_discriminator=1, n_generators=3, width=8, batch_size=32, **CPU)
    assert model.fit(x) is model
    scores = model.decision_scores_
    assert scores.shape == (64,) and ((scores >= 0) & (scores <= 1)).all()
    model.discriminator_.eval()
    with torch.no_grad():
        d = torch.sigmoid(model.discriminator_(torch.from_numpy(x))).numpy()
    assert np.allclose(scores, 1 - d, atol=1e-6)  # score = 1 - D(x)
    assert len(model.generators_) == 3
    assert len(model.history_["discriminator"]) == 2 and len(model.history_["generator"]) == 1
    with pytest.raises(RuntimeError, match="not fitted"):
        MOGAAL().decision_function(x)
    # a batch smaller than k(k+1)/2 leaves sub-generators 0..k-2 without noise: they are skipped
    small = MOGAAL(epochs_joint=1, epochs_discriminator=0, n_generators=10, width=8, batch_size=32, **CPU).fit(x)
    assert np.isfinite(small.decision_scores_).all()


def test_mogaal_direction_and_determinism():
    x, y = _obvious()
    kw = dict(epochs_joint=2, epochs_discriminator=3, n_generators=3, width=8, batch_size=16, **CPU)
    model = MOGAAL(**kw).fit(x)
    scores = model.decision_scores_
    assert roc_auc_score(y, scores) > 0.9
    with torch.no_grad():  # the sub-generators' samples are the pseudo outliers: they score higher than real data
        fake = torch.cat([g(torch.rand(8, 128)) for g in model.generators_]).numpy()
    assert model.decision_function(fake).mean() > scores[y == 0].mean()
    assert np.array_equal(scores, MOGAAL(**kw).fit(x).decision_scores_)
    assert not np.array_equal(scores, MOGAAL(**{**kw, "seed": 1}).fit(x).decision_scores_)


@pytest.mark.slow
def test_mogaal_on_digits():
    x, y = _digits()
    model = MOGAAL(epochs_joint=5, epochs_discriminator=15, width=16, device="cpu").fit(x)
    # measured 0.289: below chance, as the paper's MOGAAL on MNIST (30.9) and Fashion-MNIST (22.8), Table of
    # rho = 10%: the discriminator separates the real set from the barely trained generators' samples and scores
    # inked digits as "more real" than the zeros. The band pins that measured behaviour: a constant score (0.5), a
    # flipped sign (0.71) or a collapse to the extremes all fail it.
    auroc = roc_auc_score(y, model.decision_scores_)
    assert 0.2 < auroc < 0.4 and model.decision_scores_.std() > 0
    assert model.history_["discriminator"][-1] < model.history_["discriminator"][0]
