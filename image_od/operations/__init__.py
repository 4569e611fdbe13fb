"""The self-supervised operation sets: generative E3Outlier's pairs and discriminative E3Outlier's 111."""
