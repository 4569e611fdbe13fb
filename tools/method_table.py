"""Print the README's table of image methods from the registry (``pipelines/images/methods.METHODS``), so that
the table is regenerated rather than edited by hand: ``python tools/method_table.py``."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.images.methods import METHODS, SECTIONS  # noqa: E402

FAMILY = {  # detector class -> (family, the protocol of its paper)
    "DiscriminativeE3Outlier": ("E3Outlier, discriminative", "transductive"),
    "ImageGenerativeE3Outlier": ("E3Outlier, generative", "transductive"),
    "ContrastiveE3Outlier": ("E3Outlier, contrastive", "transductive"),
    "DeepSVDD": ("related: ELITE's base", "polluted"), "ELITE": ("related: ELITE", "polluted"),
    "ADIB": ("related: ADIB", "one-class"), "ADRA": ("related: ADRA", "one-class"),
    "CSI": ("related: CSI", "one-class"), "CSISynth": ("related: CSI with synthetic contrast", "one-class"),
    "UniConHA": ("related: UniCon-HA", "one-class"), "PyODDetector": ("PyOD cross-check", "transductive"),
}


def table() -> str:
    lines = ["| method | family | paper's protocol | needs besides the images | module |", "|---|---|---|---|---|"]
    for name, line in METHODS.items():
        cls = SECTIONS[line.section]
        family, protocol = FAMILY.get(cls.__name__, ("baseline (the paper's Table 1)", "transductive"))
        needs = ", ".join(line.needs) or "nothing"
        lines.append(f"| `{name}` | {family} | {protocol} | {needs} | `{cls.__module__.replace('.', '/')}.py` |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
