"""The GPU speed features of the training loop, exercised on the CPU: torch.compile falling back to eager
when compiling fails, and the on-device non-finite guard (fused SGD skipping the update) that a GPU run
uses instead of a per-step loss.item()."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from bn_inception.engine.checkpoint import load_checkpoint
from bn_inception.engine.precision import resolve_compile, resolve_finite_check
from bn_inception.engine.step import NonFiniteGuard
from bn_inception.engine.trainer import train_from_config
from tests.engine.conftest import needs_fashion, train_config


def run(repo: Path, run_dir: Path, *overrides: str) -> dict:
    """train() in this process (so torch.compile can be replaced), from the composed train.py config."""
    quick = ("resume=never", "trainer.max_steps=6", "trainer.eval_every=3")
    return train_from_config(train_config(*quick, *overrides), run_dir)


def _dynamo_failure() -> Exception:
    from torch._dynamo.exc import BackendCompilerFailed

    inner = RuntimeError("Cannot find a working triton installation. Either the package is not installed.")
    return BackendCompilerFailed(lambda gm, inputs: gm, inner, None)


def fails_on_first_call(model, mode=None):
    """What torch.compile returns when inductor cannot compile: the error comes at the first call."""

    def compiled(*args, **kwargs):
        raise _dynamo_failure()

    return compiled


class _BackwardFails(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise _dynamo_failure()


def fails_in_backward(model, mode=None):
    """A forward that runs (BN statistics move, dropout draws) and a lazily compiled backward that fails."""
    return lambda images: _BackwardFails.apply(model(images))


pytestmark = needs_fashion


@pytest.mark.usefixtures("one_thread")
def test_a_failing_compile_falls_back_to_eager_and_trains_exactly_as_eager(
    repo, tmp_path, monkeypatch, caplog
):
    # Dropout on, so a forward that ran before the failure would show in the RNG streams if not undone.
    args = ("experiment=bn_baseline", "model.lrn=false")
    eager = run(repo, tmp_path / "eager", *args, "trainer.compile=false")
    reference = load_checkpoint(tmp_path / "eager" / "checkpoints" / "last.pt")["model"]
    for name, fake in (("forward", fails_on_first_call), ("backward", fails_in_backward)):
        monkeypatch.setattr(torch, "compile", fake)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bn_inception.engine.step"):
            fell_back = run(repo, tmp_path / name, *args, "trainer.compile=true")
        warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
        assert len(warnings) == 1 and "BackendCompilerFailed" in warnings[0] and "triton" in warnings[0]
        assert "\n" not in warnings[0] and "trainer.compile=false" in warnings[0]
        assert fell_back["status"] == "completed" and fell_back["steps"] == 6
        assert [e["train_loss"] for e in fell_back["evals"]] == [e["train_loss"] for e in eager["evals"]], (
            name
        )
        state = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"]
        assert all(torch.equal(state[k], reference[k]) for k in reference), name


@pytest.mark.usefixtures("one_thread")
def test_device_side_check_stops_at_the_same_step_as_the_sync_check(repo, tmp_path):
    """Inception (no BN) at 1e4 x its learning rate diverges; the on-device guard (forced here on the CPU)
    finds the same first bad step, applies no update from it on, and keeps the last good checkpoint."""
    args = ("experiment=inception", "optim.lr=15", "trainer.eval_every=1", "trainer.max_steps=40")
    results = {}
    for mode in ("sync", "device"):
        results[mode] = run(repo, tmp_path / mode, *args, f"trainer.finite_check={mode}")
        assert results[mode]["status"] == "diverged"
    bad = results["sync"]["diverged_at_step"]
    assert results["device"]["diverged_at_step"] == bad
    assert results["device"]["steps"] == results["sync"]["steps"] in (bad - 1, bad)
    last = load_checkpoint(tmp_path / "device" / "checkpoints" / "last.pt")
    assert last["step"] == bad - 1  # the last evaluation before the bad step: every tensor finite
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def _tiny(fused: bool = True):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=fused)


def test_device_guard_skips_every_update_from_the_first_non_finite_step():
    model, optimizer = _tiny()
    guard = NonFiniteGuard("device", 1, optimizer, None, torch.device("cpu"))
    x = torch.randn(8, 4)

    def step(k: int, poison: float | None = None) -> None:
        optimizer.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        if poison is not None:
            model.weight.grad[0, 0] = poison
        assert guard.check(k, loss) is False  # never a host sync in device mode
        optimizer.step()

    step(1)
    step(2)
    assert guard.poll() is None
    before = [p.detach().clone() for p in model.parameters()]
    step(3, poison=float("nan"))  # a NaN gradient with a finite loss
    step(4)  # finite again: still skipped, the run is over
    step(5, poison=float("inf"))
    assert guard.poll() == 3
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_device_guard_catches_a_non_finite_loss_and_needs_the_fused_kernel():
    model, optimizer = _tiny()
    guard = NonFiniteGuard("device", 1, optimizer, None, torch.device("cpu"))
    optimizer.zero_grad()
    (model(torch.randn(2, 4)).sum() * 0).backward()
    guard.check(7, torch.tensor(float("inf")))
    assert guard.poll() == 7
    _, unfused = _tiny(fused=False)
    with pytest.raises(ValueError, match="needs the fused SGD kernel"):
        NonFiniteGuard("device", 1, unfused, None, torch.device("cpu"))


def test_sync_guard_checks_the_loss_every_n_steps():
    _, optimizer = _tiny(fused=False)
    guard = NonFiniteGuard("sync", 2, optimizer, None, torch.device("cpu"))
    nan = torch.tensor(float("nan"))
    assert guard.check(1, nan) is False and guard.check(2, nan) is True
    assert guard.check(2, torch.tensor(1.0)) is False and guard.poll() is None


def test_speed_switches_resolve_by_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_compile("auto", cpu) is None and resolve_compile("auto", cuda) == "default"
    assert (
        resolve_compile(True, cpu) == "default"
        and resolve_compile("reduce-overhead", cuda) == "reduce-overhead"
    )
    with pytest.raises(ValueError, match="compile='fast' is not valid"):
        resolve_compile("fast", cuda)
    assert resolve_finite_check("auto", cpu) == "sync" and resolve_finite_check("auto", cuda) == "device"
    with pytest.raises(ValueError, match="use auto, sync, device"):
        resolve_finite_check("never", cpu)
