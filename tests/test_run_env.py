"""env.json: the CPU, its instruction sets, the resolved precision and the reference workload's time."""
import torch

from pipelines import run_env
from pipelines.run_env import CPU_FLAGS, environment, reference_workload_s


def test_reference_workload_is_timed_and_leaves_the_global_rng_alone(monkeypatch):
    monkeypatch.setattr(run_env, "REFERENCE_STEPS", 2)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    seconds = reference_workload_s.__wrapped__("cpu")  # uncached: the real one stays the full workload's
    assert torch.equal(torch.rand(3), expected)
    assert 0 < seconds < 30


def test_environment_records_cpu_precision_and_reference_time(monkeypatch):
    monkeypatch.setattr(run_env, "reference_workload_s", lambda device: 1.23456)
    monkeypatch.setattr(run_env, "cpu_flags", lambda: {"fpu", "avx2", "avx512f"})
    monkeypatch.setattr(run_env, "cpu_model", lambda: "Test CPU")
    env = environment(3, "cpu", precision="fp32")
    assert env["seed"] == 3 and env["device"] == "cpu" and env["precision"] == "fp32"
    assert env["cpu"]["model"] == "Test CPU" and list(env["cpu"]["flags"]) == list(CPU_FLAGS)
    assert env["cpu"]["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_tile": False,
                                   "amx_bf16": False}
    assert env["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["reference_workload_s"] == 1.2346 and env["torch_threads"] == torch.get_num_threads()
    assert "precision" not in environment(3, "cpu")  # runs without a training precision (vad) record none
