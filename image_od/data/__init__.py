"""Samples the training loop reads, the image benchmark sets, the paper's protocols and a user's images."""
