"""Learning rate: the paper's step-wise exponential decay, a pure function of the step (Sec. 4.2, 4.2.1)."""

from __future__ import annotations

import torch
from timm.scheduler import StepLRScheduler


def decay_interval_steps(
    decay_epochs: float, decay_steps: float | None, speedup: float, train_images: int, global_batch: int
) -> float:
    """Steps between two lr decays: GoogLeNet's "every 8 epochs" in steps, divided by the speed-up.

    BN-x5 and up "accelerate the learning rate decay by 6x" (Sec. 4.2.1 mod 4): ``speedup=6``.
    ``decay_steps`` (when set) gives the baseline interval in steps directly.
    """
    base = decay_steps if decay_steps is not None else decay_epochs * train_images / global_batch
    return base / speedup


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, decay_interval: float, decay_rate: float
) -> StepLRScheduler:
    """``lr(step) = lr0 * decay_rate ** floor(step / decay_interval)``; ``step_update(step)`` sets it."""
    return StepLRScheduler(optimizer, decay_t=decay_interval, decay_rate=decay_rate, t_in_epochs=False)


def lr_at(lr0: float, step: int, decay_interval: float, decay_rate: float) -> float:
    """The same schedule as a plain formula, for reports and tests."""
    return lr0 * decay_rate ** (step // decay_interval)
