"""Sample weighting rules that refine a detector while it trains on contaminated data.

- :class:`SelfPaced`: the self-paced weights of the group's unsupervised video method (Yu et al., CVPR 2022,
  LBR-SPR, ``sp_mode='mixture'``): after a warm-up, every batch's samples are weighted by their current error s
  with the batch's mean mu and standard deviation sd: 1 if s <= l1 = mu + sd; 0 if s >= l2 = mu + (r0 - t k) sd
  (never below l1), where t counts the weighted steps so far and k is the shrink rate; and
  l1 (l2 - s) / (s (l2 - l1)) in between. Hard (high-error) samples, the likely outliers, leave the training set
  ever more as t grows.
- :func:`weights_from_scores`: E3Outlier's re-weighting (Sec. 3.5): min-max normalised normality scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SelfPaced:
    """Self-paced weighting; ``warmup_epochs`` unweighted epochs first, then ``shrink`` per weighted step."""

    warmup_epochs: int = 1
    shrink: float = 5e-3
    init_range: float = 4.0

    def thresholds(self, scores: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(l1, l2) for these scores at weighted step ``step``."""
        mu, sd = scores.mean(), scores.std() if len(scores) > 1 else torch.zeros((), device=scores.device)
        l1 = mu + sd
        return l1, torch.maximum(mu + (self.init_range - step * self.shrink) * sd, l1)

    def weights(self, scores: torch.Tensor, step: int) -> torch.Tensor:
        """Per-sample weights in [0, 1] for the errors ``scores`` (higher = worse) at weighted step ``step``."""
        s = scores.detach().float()
        l1, l2 = self.thresholds(s, step)
        w = torch.ones_like(s)
        w[s >= l2] = 0.0
        mid = (s > l1) & (s < l2)
        w[mid] = l1 * (l2 - s[mid]) / (s[mid] * (l2 - l1))
        return w


def weights_from_scores(normality: np.ndarray) -> np.ndarray:
    """Min-max normalised normality scores, the re-weighting of the E3Outlier reference code (non-negative; a
    weighted loss divides by their sum per batch, which equals the paper's sum-to-one normalisation)."""
    s = np.asarray(normality, np.float64) - np.min(normality)
    return (s / s.max() if s.max() > 0 else np.ones_like(s)).astype(np.float32)
