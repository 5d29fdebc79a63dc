"""Where and how a network runs: device, autocast precision, memory layout, compilation, the finite check.

One home for these switches, shared by training and evaluation so that ``auto`` means the same in both
(``trainer.*`` and evaluate's keys of the same names; their choices are checked by ``bn_inception.config``
before anything runs, so the errors here are for library callers).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FINITE_CHECKS = ("auto", "sync", "device")
_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when a GPU is visible, else cpu; a named device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not valid; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no GPU is visible; use device=cpu or auto")
    return torch.device(device)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """``auto`` -> bf16 autocast on a GPU, none on a CPU (bf16 convolutions there are slower than fp32)."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp not in _AMP:
        raise ValueError(f"amp={amp!r} is not valid; use auto, bf16, fp16 or none")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs a GPU; use amp=bf16 or none on a CPU")
    return _AMP[amp]


def resolve_channels_last(value: Any, device: torch.device) -> bool:
    """``auto`` -> on, on every device: channels-last measured faster on CPU as on GPU (64 vs 87 ms per
    step of bn_inception_small on 1 thread, 541 vs 692 ms for bn_inception at batch 8; docs/benchmarks.md)."""
    return _switch(value, "channels_last", auto=True)


def resolve_compile(value: Any, device: torch.device) -> str | None:
    """``trainer.compile`` -> a torch.compile mode, or None for eager. auto: ``default`` on a GPU."""
    text = str(value).lower()
    if text in COMPILE_MODES:
        return text
    if text not in ("auto", "true", "false"):
        raise ValueError(f"compile={value!r} is not valid; use auto, true, false or a mode: {COMPILE_MODES}")
    return "default" if _switch(value, "compile", auto=device.type == "cuda") else None


def resolve_finite_check(value: str, device: torch.device) -> str:
    """``trainer.finite_check`` -> sync | device. auto: device on a GPU (no per-step sync), sync elsewhere."""
    if value not in FINITE_CHECKS:
        raise ValueError(f"trainer.finite_check={value!r} is not valid; use {', '.join(FINITE_CHECKS)}")
    if value == "auto":
        return "device" if device.type == "cuda" else "sync"
    return value


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None):
    """Autocast to ``amp_dtype`` on ``device``, or nothing when it is None."""
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _switch(value: Any, key: str, auto: bool) -> bool:
    text = str(value).lower()  # the config's strings, or a bool from library callers
    if text == "auto":
        return auto
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"{key}={value!r} is not valid; use auto, true or false")
