"""The shared training loop's learning-rate schedule: exact on a hand-made case, and resumed at the right step."""
import math

import pytest
import torch
from torch import nn

from image_od.data.samples import ArrayData
from image_od.engine.training import TrainSettings, lr_factor, lr_history, steps_per_epoch, train


def _fit(settings: TrainSettings, checkpoint=None, stop_at: int | None = None) -> float:
    """Train one weight with loss = w (gradient 1 at every step) by plain SGD from 0; return the final w, which is
    -lr times the sum of the schedule's factors over the steps done."""
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    data = ArrayData({"x": torch.zeros(10, 1)})

    def interrupt(epoch: int) -> None:
        if epoch == stop_at:
            raise KeyboardInterrupt

    try:
        train(model, lambda m, b: m.weight.sum(), data, settings, device=torch.device("cpu"),
              generator=torch.Generator().manual_seed(0), checkpoint=checkpoint, on_epoch_start=interrupt)
    except KeyboardInterrupt:
        pass
    return model.weight.item()


def _settings(schedule: str) -> TrainSettings:  # 10 samples in batches of 4: 3 steps per epoch, 4 epochs
    return TrainSettings(epochs=4, batch_size=4, optimizer="sgd", lr=0.1, momentum=0.0, lr_schedule=schedule,
                         warmup_epochs=1, progress=False)


def test_lr_factor_values_and_unknown_schedule():
    assert lr_factor("constant", 7, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 9, 10) == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))
    assert [lr_factor("step", s, 10) for s in range(10)] == pytest.approx([1] * 6 + [0.1] * 2 + [0.01] * 2)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("warmup_cosine", 0, 10)


@pytest.mark.parametrize("schedule, expected", [
    ("constant", -0.1 * 12),
    # sum over s < T of 0.5 (1 + cos(pi s / T)) is (T + 1) / 2 exactly, T = 12 steps
    ("cosine", -0.1 * 13 / 2),
    # per epoch, one warm-up epoch: factors 1, then 0.5 (1 + cos(pi e / 3)) = 1, 0.75, 0.25; 3 steps each
    ("warmup_cosine", -0.1 * 3 * (1 + 1 + 0.75 + 0.25)),
    # x0.1 from step round(0.6 * 12) = 7, x0.01 from round(0.8 * 12) = 10
    ("step", -0.1 * (7 + 3 * 0.1 + 2 * 0.01)),
])
def test_schedule_sets_every_steps_rate(schedule, expected):
    assert _fit(_settings(schedule)) == pytest.approx(expected, rel=1e-5)


def test_cosine_schedule_resumes_at_the_interrupted_step(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    assert _fit(_settings("cosine"), ckpt, stop_at=2) == pytest.approx(-0.1 * sum(
        lr_factor("cosine", s, 12) for s in range(6)), rel=1e-5)  # two epochs done and saved
    assert _fit(_settings("cosine"), ckpt) == pytest.approx(-0.1 * 13 / 2, rel=1e-5)


def test_steps_per_epoch_follow_the_batches_that_are_made():
    """A last batch of one is merged into the one before (129 in 128s: one step); drop_last keeps full batches."""
    def steps(n: int, batch: int, drop_last: bool = False) -> int:
        return steps_per_epoch(n, TrainSettings(batch_size=batch, drop_last=drop_last))

    assert [steps(129, 128), steps(130, 128), steps(256, 128), steps(50, 128)] == [1, 2, 2, 1]
    assert [steps(130, 128, True), steps(129, 128, True), steps(127, 128, True), steps(50, 64, True)] == [1, 1, 1, 1]
    settings = TrainSettings(epochs=2, batch_size=4, lr=1.0, lr_schedule="step", milestones=(0.5,), gamma=0.5)
    assert lr_history(settings, 9) == [1.0, 1.0, 0.5, 0.5]  # 9 in 4s: batches of 4 and 5, 2 steps per epoch


def test_step_hook_sees_every_step_and_drop_last_leaves_the_rest_out():
    model = nn.Linear(1, 1, bias=False)
    seen = []
    settings = TrainSettings(epochs=2, batch_size=4, drop_last=True, progress=False)
    train(model, lambda m, b: m(b["x"]).sum(), ArrayData({"x": torch.arange(10.0)[:, None]}), settings,
          device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
          on_step_end=lambda step, batch: seen.append((step, len(batch["x"]), batch["x"].device.type)))
    assert seen == [(0, 4, "cpu"), (1, 4, "cpu"), (2, 4, "cpu"), (3, 4, "cpu")]  # two full batches per epoch
