"""The GPU speed features of the training loop, exercised on the CPU: torch.compile falling back to eager
when compiling fails, and the on-device non-finite guard (fused SGD skipping the update) that a GPU run
uses instead of a per-step loss.item()."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from bn_inception.engine import precision
from bn_inception.engine.checkpoint import load_checkpoint
from bn_inception.engine.precision import (
    check_deterministic,
    resolve_compile,
    resolve_device,
    resolve_finite_check,
)
from bn_inception.engine.step import NonFiniteGuard, TrainStep, compile_plan
from bn_inception.engine.trainer import train
from tests.engine.conftest import needs_fashion, train_config


def run(repo: Path, run_dir: Path, *overrides: str) -> dict:
    """train() in this process (so torch.compile can be replaced), from the composed train.py config."""
    quick = ("resume=never", "trainer.max_steps=6", "trainer.eval_every=3")
    return train(train_config(*quick, *overrides), run_dir)


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
        with caplog.at_level(logging.INFO, logger="bn_inception.engine.step"):
            fell_back = run(repo, tmp_path / name, *args, "trainer.compile=true")
        said = [r.getMessage() for r in caplog.records if "torch.compile:" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("torch.compile: eager (compiling failed: ")
        assert "BackendCompilerFailed" in said[0] and "triton" in said[0]
        assert "\n" not in said[0] and "trainer.compile=false" in said[0]
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
    assert resolve_finite_check("auto", cpu) == "sync" and resolve_finite_check("auto", cuda) == "device"


def _tiny_step(compile_fn, fallback=True):
    model, optimizer = _tiny()
    step = TrainStep(
        model, optimizer, None, torch.device("cpu"), None, "default", compile_fn, fallback=fallback
    )
    return step, torch.randn(4, 4), torch.tensor([0, 1, 2, 0])


def test_the_first_line_about_compile_says_compiled_or_eager_and_why(caplog, monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_plan("false", cuda, False) == (None, "trainer.compile=false")
    assert compile_plan("auto", cpu, False) == (None, "trainer.compile=auto: off on cpu")
    assert compile_plan("auto", cuda, True)[1].startswith("trainer.sync_bn=true: SyncBatchNorm breaks")
    assert compile_plan("reduce-overhead", cpu, False) == ("reduce-overhead", "")  # g++ is here
    # Where Triton or Inductor could not build a kernel, the run says so at start instead of failing later.
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert compile_plan("true", cuda, False) == (
        None, "no compiler to build kernels: CC is unset and neither gcc nor clang is on PATH",
    )  # fmt: skip
    monkeypatch.setenv("CXX", "/opt/gcc/bin/g++")
    assert compile_plan("true", cpu, False) == ("default", "")
    step, x, y = _tiny_step(lambda model, mode: model)  # a "compiled" model that works
    with caplog.at_level(logging.INFO, logger="bn_inception.engine.step"):
        step.forward_backward(x, y)
        step.forward_backward(x, y)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("torch.compile: compiled (mode default; the first step")


def test_under_ddp_a_failed_compile_stops_the_run_with_one_line():
    """A DDP backward that failed part-way leaves the reducer mid-iteration; an eager retry would fail with
    another error while the other processes wait in their all-reduce."""
    step, x, y = _tiny_step(fails_on_first_call, fallback=False)
    with pytest.raises(RuntimeError, match=r"^torch.compile failed under DDP \(BackendCompilerFailed: ") as e:
        step.forward_backward(x, y)
    assert "relaunch with trainer.compile=false" in str(e.value) and "\n" not in str(e.value)


def test_a_gpu_torch_cannot_use_is_refused_not_trained_on_the_cpu(tmp_path, monkeypatch):
    """A driver too old for the CUDA 13 wheel: torch.cuda.is_available() is False though nvidia-smi works."""
    proc = tmp_path / "nvidia"
    (proc / "gpus" / "0000:01:00.0").mkdir(parents=True)
    (proc / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19\n")
    monkeypatch.setattr(precision, "NVIDIA_PROC", proc)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for device in ("auto", "cuda"):
        with pytest.raises(ValueError) as e:
            resolve_device(device)
        message = str(e.value)
        assert message.startswith(
            f"device={device}: this machine has an NVIDIA GPU (driver 535.104.05) that "
        )
        assert "driver >= 580" in message and message.endswith("or set device=cpu to run on the CPU")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # GPUs hidden on purpose: the CPU, as asked
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    (proc / "gpus" / "0000:01:00.0").rmdir()  # no GPU at all
    assert resolve_device("auto") == torch.device("cpu")


def test_deterministic_training_with_lrn_is_refused_on_a_gpu():
    """LRN pools over channels with a 3-D average pool whose CUDA backward is not deterministic: torch would
    raise at the first backward; the run is refused before anything is built instead."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    with pytest.raises(ValueError, match="trainer.deterministic=true cannot train model.lrn=true on a GPU"):
        check_deterministic(True, True, cuda)
    for args in ((True, True, cpu), (True, False, cuda), (False, True, cuda)):
        check_deterministic(*args)
