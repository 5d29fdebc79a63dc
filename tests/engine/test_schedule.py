import pytest
import torch

from bn_inception.cli import compose
from bn_inception.config import ConfigError, OptimConfig, effective_lr
from bn_inception.engine.schedule import build_lr_schedule, decay_interval_steps, lr_at


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.045), (99, 0.045), (100, 0.045 * 0.96), (250, 0.045 * 0.96**2), (1000, 0.045 * 0.96**10)],
)
def test_step_decay_table(step, expected):
    assert lr_at(0.045, step, decay_interval=100, decay_rate=0.96) == pytest.approx(expected)


def test_timm_schedule_is_the_same_pure_function_of_the_step():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0075)
    sched = build_lr_schedule(opt, decay_interval=53.5, decay_rate=0.96)
    # out of order on purpose: the lr depends on the step alone (so resuming needs no scheduler state)
    for step in [500, 0, 53, 54, 107, 10_000, 1]:
        sched.step_update(step)
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(0.0075, step, 53.5, 0.96))


def test_googlenet_interval_and_bn_speedup():
    # GoogLeNet: every 8 epochs; ImageNet at batch 32 is 40,036.5 steps/epoch
    base = decay_interval_steps(8, None, 1, train_images=1_281_167, global_batch=32)
    assert base == pytest.approx(8 * 1_281_167 / 32)
    assert decay_interval_steps(8, None, 6, 1_281_167, 32) == pytest.approx(base / 6)  # "6x faster"
    assert decay_interval_steps(8, 1200, 6, 1_281_167, 32) == pytest.approx(200)  # explicit steps win
    with pytest.raises(ConfigError, match="schedule.speedup=0.0 is not valid; it must be > 0"):
        compose("train", ["schedule.speedup=0"])  # refused by the schema, before anything runs


def test_linear_lr_scaling_with_global_batch():
    optim = OptimConfig(lr=0.045)
    assert effective_lr(optim, 32) == pytest.approx(0.045)
    assert effective_lr(optim, 256) == pytest.approx(0.36)
    assert effective_lr(OptimConfig(lr=0.045, scale_lr="none"), 256) == pytest.approx(0.045)
    with pytest.raises(ConfigError, match="optim.scale_lr=sqrt is not valid; use one of: linear, none"):
        compose("train", ["optim.scale_lr=sqrt"])
