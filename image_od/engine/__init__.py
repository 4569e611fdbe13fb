"""The one training loop every deep detector uses, training precision, and multi-process runs under torchrun."""
