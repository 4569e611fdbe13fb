"""Every image detector by name: the families whose settings a profile section holds (``configs/image_od/*.yaml``).

Adding a detector is one module (an ``OutlierDetector`` subclass), one line here and its profile section; a line in
``pipelines/images/methods.py`` then makes it a method of ``image-od bench`` and ``image-od score``.
"""
from __future__ import annotations

from image_od.baselines.autoencoders import CAE, CAEIF, DRAE, RDAE, RSRAE
from image_od.baselines.deep_svdd import DeepSVDD
from image_od.baselines.density import DAGMM, DSEBM
from image_od.baselines.gaal import MOGAAL
from image_od.baselines.pretrained import PretrainedFeatureOD
from image_od.baselines.pyod import PyODDetector
from image_od.baselines.shallow import PixelIsolationForest
from image_od.detector import OutlierDetector
from image_od.e3outlier.contrastive import ContrastiveE3Outlier
from image_od.e3outlier.discriminative import DiscriminativeE3Outlier
from image_od.e3outlier.generative_images import ImageGenerativeE3Outlier
from image_od.related.csi import CSI, CSISynth
from image_od.related.elite import ELITE
from image_od.related.transfer import ADIB, ADRA
from image_od.related.unicon import UniConHA

DETECTORS: dict[str, type[OutlierDetector]] = {
    # E3Outlier
    "discriminative": DiscriminativeE3Outlier, "generative": ImageGenerativeE3Outlier,
    "contrastive": ContrastiveE3Outlier,
    # the paper's baselines
    "cae": CAE, "cae-if": CAEIF, "drae": DRAE, "rdae": RDAE, "rsrae": RSRAE, "dsebm": DSEBM, "dagmm": DAGMM,
    "mo-gaal": MOGAAL, "pretrained": PretrainedFeatureOD, "iforest": PixelIsolationForest, "deep-svdd": DeepSVDD,
    # related methods
    "elite": ELITE, "adib": ADIB, "adra": ADRA, "unicon-ha": UniConHA, "csi": CSI, "csi-synth": CSISynth,
    # PyOD's models as an independent cross-check (a benchmark extra)
    "pyod": PyODDetector,
}
