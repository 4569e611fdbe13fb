"""``precision: auto``: bf16 only where the hardware runs it natively, with the detection mocked both ways."""
import numpy as np
import pytest
import torch

from image_od.engine import precision
from image_od.engine.precision import parse_cpuinfo, resolve_precision

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16

processor\t: 1
model name\t: other
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16\nCPU implementer\t: 0x41\n"


def _cpu(monkeypatch, text: str, capability: str = "AVX512") -> None:
    monkeypatch.setattr(precision, "cpuinfo", lambda: parse_cpuinfo(text))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)


def test_cpuinfo_first_block_is_parsed():
    info = parse_cpuinfo(X86)
    assert info["model name"] == "AMD EPYC" and info["flags"].split()[-1] == "avx512_bf16"
    assert parse_cpuinfo(ARM)["Features"] == "fp asimd sve bf16"


@pytest.mark.parametrize("text,capability,expected", [
    (X86, "AVX512", "bf16"),  # AVX512-BF16 with AVX512 kernels
    (X86, "AVX2", "fp32"),  # the flag, but PyTorch limited to AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)
    (X86.replace("avx512_bf16", "amx_bf16 amx_tile"), "AVX512", "bf16"),  # Intel AMX
    (X86.replace(" avx512_bf16", ""), "AVX512", "fp32"),  # AVX512 without bf16 (e.g. Skylake-SP)
    (X86.replace(" avx512f avx512_bf16", ""), "AVX2", "fp32"),  # AVX2 only: bf16 would be emulated
    (ARM, "DEFAULT", "bf16"),  # ARM with FEAT_BF16 (e.g. Graviton3)
    (ARM.replace(" bf16", ""), "DEFAULT", "fp32"),
])
def test_auto_on_cpu_follows_the_bf16_instructions(monkeypatch, text, capability, expected):
    _cpu(monkeypatch, text, capability)
    assert resolve_precision("auto", "cpu") == resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"


def test_auto_without_cpuinfo_asks_pytorch(monkeypatch):
    _cpu(monkeypatch, "")
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        assert resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_asks_for_native_bf16(monkeypatch, native, expected):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: asked.append(including_emulation) or native)
    assert resolve_precision("auto", "cuda:0") == expected and asked == [False]
    assert resolve_precision("auto", "mps") == "fp32"


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", "cpu")


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_detector_resolves_auto_when_fitting(monkeypatch, native, expected):
    from image_od.e3outlier.discriminative import DiscriminativeE3Outlier

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 1, 32, 32)).astype(np.float32)
    model = DiscriminativeE3Outlier(operations="RA", backbone="wrn-10-1", epochs=1, ops_per_image=1, score_ops=2,
                                    optimizer="sgd", device="cpu", progress=False)
    assert model.precision == "auto" and model.fit(x).precision_ == expected
    with model._autocast():
        assert torch.is_autocast_enabled("cpu") == (expected == "bf16")
    assert DiscriminativeE3Outlier.merged([model], x).precision_ == expected


def test_bf16_training_tracks_fp32():
    """Explicit bf16 (kept tiny: 4 Adam steps, since CPUs without bf16 instructions emulate it ~8x slower): the
    convolutions run in bfloat16, the scores come out in float32, and the network ends close to its fp32 twin
    (measured: parameter gap 0.21 of the distance trained, score correlations above 0.997)."""
    from image_od.data.protocol import to_model_input
    from image_od.e3outlier.discriminative import DiscriminativeE3Outlier
    from image_od.engine.training import seed_everything
    from image_od.networks.backbones import make_backbone
    from tests.test_image_od import _idx

    x = to_model_input(_idx("t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28)[:32])
    conv_dtypes: set[torch.dtype] = set()

    def fit(name: str) -> DiscriminativeE3Outlier:
        return DiscriminativeE3Outlier(operations="RA", backbone="wrn-10-1", epochs=2, ops_per_image=2, score_ops=4,
                                       batch_size=32, optimizer="adam", precision=name, progress=False).fit(x)

    fp32 = fit("fp32")
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, args, out: conv_dtypes.add(out.dtype) if isinstance(m, torch.nn.Conv2d) else None)
    try:
        bf16 = fit("bf16")
    finally:
        hook.remove()
    assert bf16.precision_ == "bf16" and conv_dtypes == {torch.bfloat16}

    def params(net: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    seed_everything(0)
    start = params(make_backbone("wrn-10-1", 1, 72))
    trained = (params(fp32.nets_[0]) - start).norm()
    assert trained > 0.1 and (params(bf16.nets_[0]) - params(fp32.nets_[0])).norm() < 0.4 * trained
    a, b = fp32.scores(x, ["gtp", "mp", "ne"]), bf16.scores(x, ["gtp", "mp", "ne"])
    for score in a:
        assert b[score].dtype == np.float32 and np.isfinite(b[score]).all()
        assert np.corrcoef(a[score], b[score])[0, 1] > 0.99, score
