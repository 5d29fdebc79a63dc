"""A training step's forward and backward, made fast on a GPU without changing what it computes.

- ``torch.compile``, said in one line: ``compiled`` or ``eager (why)``. :func:`compile_plan` decides before
  anything runs where compiling cannot work or help (no C compiler, Triton or Python headers; SyncBatchNorm,
  pytorch/pytorch#161302). Other compile errors surface on the first call: :class:`TrainStep` runs it under
  a guard and, on an exception, restores what the attempt touched (BN buffers, gradients, RNG streams), logs
  one line and trains eagerly; an error that also happens eagerly is raised. Under DDP (``fallback=False``)
  a failed compile is raised: a backward that failed part-way leaves DDP's reducer mid-iteration, so the run
  stops with one line that says to set ``trainer.compile=false``.
- A non-finite guard (:class:`NonFiniteGuard`, ``trainer.finite_check``): ``sync`` reads the loss every
  ``finite_check_every`` steps (a host sync on a GPU) and stops before the update; ``device`` checks the
  gradients (GradScaler's kernel) and the loss on the device into a sticky flag that the fused SGD kernel
  takes as its ``found_inf``, skipping the update from the first bad step on. The flag is read at log and
  evaluation steps; the run then stops as diverged at the first bad step with the parameters of the step
  before it, as ``sync`` with ``finite_check_every=1`` leaves them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sysconfig
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bn_inception.engine.precision import autocast_context, resolve_compile

log = logging.getLogger(__name__)


class TrainStep:
    """``step(images, labels, k) -> (logits, loss)``: training step ``k`` (1-based): forward under autocast,
    cross-entropy, backward (through the GradScaler when there is one), the non-finite check, the update.
    ``compile_mode`` None runs ``model`` eagerly. ``diverged_at``: the first non-finite step once known (sync
    mode: at once, the update not made; device mode: at :meth:`poll`, see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Any,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        compile_mode: str | None = None,
        compile_fn: Callable[..., nn.Module] | None = None,
        guard: NonFiniteGuard | None = None,
        fallback: bool = True,
    ) -> None:
        self.eager, self.optimizer, self.scaler = model, optimizer, scaler
        self.device, self.amp_dtype, self.guard = device, amp_dtype, guard
        self.model, self.on_trial, self.fallback = model, False, fallback
        self.compile_mode = compile_mode
        self.diverged_at: int | None = None
        if compile_mode is not None:
            compile_fn = compile_fn or torch.compile
            try:
                self.model, self.on_trial = compile_fn(model, mode=compile_mode), True
            except Exception as e:  # noqa: BLE001 - any failure to set up compilation means: run eagerly
                self._fall_back(e)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, loss = self.forward_backward(images, labels)
        # Checked before the update, so a non-finite loss or gradient never reaches the parameters:
        # sync mode reads the loss (a host sync on a GPU); device mode makes the fused update skip itself.
        if self.guard is not None and self.guard.check(step, loss):
            self.diverged_at = step
            return logits, loss
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return logits, loss

    def poll(self) -> int | None:
        """Device mode: read the on-device flag (a host sync: call it where the loop syncs anyway)."""
        if self.diverged_at is None and self.guard is not None:
            self.diverged_at = self.guard.poll()
        return self.diverged_at

    def forward_backward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward only (the first call tries the compiled model, then falls back)."""
        if not self.on_trial:
            return self._forward_backward(self.model, images, labels)
        saved, start = self._snapshot(), time.perf_counter()
        try:
            out = self._forward_backward(self.model, images, labels)
            log.info("torch.compile: compiled (mode %s; the first step, compilation included, took %.0f s)",
                     self.compile_mode, time.perf_counter() - start)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - see the module docstring: retried eagerly, re-raised there
            self._restore(saved)
            self._fall_back(e)
            out = self._forward_backward(self.model, images, labels)
        self.on_trial = False
        return out

    def _forward_backward(self, model, images, labels):
        with autocast_context(self.device, self.amp_dtype):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return logits, loss

    def _snapshot(self) -> dict[str, Any]:
        state = {
            "buffers": [b.detach().clone() for b in self.eager.buffers()],
            "cpu_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def _restore(self, saved: dict[str, Any]) -> None:
        with torch.no_grad():
            for buffer, value in zip(self.eager.buffers(), saved["buffers"], strict=True):
                buffer.copy_(value)
        self.optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(saved["cpu_rng"])
        if "cuda_rng" in saved:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])

    def _fall_back(self, error: BaseException) -> None:
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())[:300]
        why = f"{type(error).__name__}: {text}"
        if not self.fallback:
            raise RuntimeError(
                f"torch.compile failed under DDP ({why}); a DDP step that failed part-way cannot be retried "
                f"eagerly: relaunch with trainer.compile=false"
            ) from error
        log.warning(
            "torch.compile: eager (compiling failed: %s); trainer.compile=false skips the attempt", why
        )
        self.model = self.eager


def compile_plan(setting: Any, device: torch.device, sync_bn: bool) -> tuple[str | None, str]:
    """``trainer.compile`` -> (the torch.compile mode to try, or None; why not, when None). Checked before
    anything is built: what makes compiling fail or pointless on every process alike (``sync_bn``: the model
    has SyncBatchNorm layers); what remains is found at the first step (:class:`TrainStep`)."""
    mode = resolve_compile(setting, device)
    if mode is None:
        text = str(setting).lower()  # Hydra gives a bool for true/false
        return None, f"trainer.compile={text}" + (f": off on {device.type}" if text == "auto" else "")
    if sync_bn:  # pytorch/pytorch#161302
        return None, "trainer.sync_bn=true: SyncBatchNorm breaks the compiled graph at every BN layer"
    # Inductor builds C++ kernels on a CPU; on a GPU Triton builds its launcher with a C compiler against
    # Python's headers (triton/runtime/build.py). Without them the first step fails, after the tracing.
    env, programs = ("CXX", ("g++", "clang++")) if device.type == "cpu" else ("CC", ("gcc", "clang"))
    if not os.environ.get(env) and not any(shutil.which(p) for p in programs):
        return (
            None,
            f"no compiler to build kernels: {env} is unset and neither {' nor '.join(programs)} is on PATH",
        )
    if device.type == "cuda" and find_spec("triton") is None:
        return None, "Triton is not installed"
    if device.type == "cuda" and not Path(sysconfig.get_paths()["include"], "Python.h").is_file():
        return None, "no Python headers (Python.h; e.g. the python3-dev package) for Triton to build against"
    return mode, ""


class NonFiniteGuard:
    """Stops a run at its first non-finite step; see the module docstring for the two modes."""

    def __init__(
        self, mode: str, every: int, optimizer: torch.optim.Optimizer, scaler: Any, device: torch.device
    ):
        self.mode, self.every, self.optimizer, self.scaler = mode, every, optimizer, scaler
        if mode == "device":
            if not all(g.get("fused") for g in optimizer.param_groups):
                raise ValueError(
                    "trainer.finite_check=device needs the fused SGD kernel (it skips updates on the "
                    "device); use trainer.finite_check=sync"
                )
            self.found = torch.zeros((), device=device)  # 1.0 once any step was non-finite (sticky)
            self.first_bad = torch.full((), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
            self._step_bad = torch.zeros((), device=device)
            self._one = torch.ones((), device=device)
            self._params = [p for g in optimizer.param_groups for p in g["params"]]

    def check(self, step: int, loss: torch.Tensor) -> bool:
        """After backward, before the update of step ``step`` (1-based). True: stop now (sync mode, the loss
        is not finite). In device mode this never syncs and returns False; the update is made conditional."""
        if self.mode == "sync":
            return step % self.every == 0 and not bool(torch.isfinite(loss.detach()).all().item())
        grads = [p.grad for p in self._params if p.grad is not None]
        self._step_bad.zero_()
        if self.scaler is None:  # with fp16 the GradScaler checks (and skips) scaled gradients itself
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self._step_bad, self._one)
        self._step_bad = torch.maximum(self._step_bad, (~torch.isfinite(loss.detach())).float())
        newly_bad = (self._step_bad > 0) & (self.found == 0)
        self.first_bad = torch.where(newly_bad, step, self.first_bad)
        self.found = torch.maximum(self.found, self._step_bad)
        if self.scaler is None:
            self.optimizer.grad_scale = None
            self.optimizer.found_inf = self.found  # the fused kernel skips the update while this is 1
        return False

    def poll(self) -> int | None:
        """Device mode: the first non-finite step so far (agreed over processes), or None. A host sync."""
        if self.mode == "sync":
            return None
        first = self.first_bad.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
        value = int(first.item())
        return None if value == torch.iinfo(torch.int64).max else value
