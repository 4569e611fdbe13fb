"""The baselines of the E3Outlier comparison (autoencoders, density models, MO-GAAL, pretrained features,
Deep SVDD, raw-pixel Isolation Forest) and PyOD's models as an independent cross-check."""
