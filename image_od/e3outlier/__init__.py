"""E3Outlier (TPAMI): the discriminative, generative and contrastive detectors, score refinement and
self-training."""
