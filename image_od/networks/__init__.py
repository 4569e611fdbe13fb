"""Networks of the detectors: the generators (autoencoders, UNet) and the classifier backbones."""
