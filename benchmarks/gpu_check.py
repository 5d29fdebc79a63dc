"""The one command to run when a GPU is lent: every GPU path of the project, PASS/FAIL, then the throughput.

    python benchmarks/gpu_check.py                 # on a CUDA machine: within --budget (480 s) on an H100
    python benchmarks/gpu_check.py --timm-train ~/pytorch-image-models/train.py   # + timm's own train.py row
    python benchmarks/gpu_check.py --dry-run       # the same steps on the CPU, tiny sizes

Each step runs as a user runs the project (``train.py``, ``evaluate.py``, ``torchrun``, the throughput
benchmark), or as a probe in its own process, with its own timeout, inside one overall budget (``--budget``;
a dry run has the budget alone, a CPU's pace says nothing of a GPU's): a step that no longer fits is
reported as SKIP, never left to overrun. One line per step, and the throughput tables of
``benchmarks/train_throughput.py``; exit status 1 if any step failed. Logs and run directories stay in
``--out`` (a temporary folder by default).

Steps, the most telling first (in case time runs out): ``env`` (torch, CUDA, driver, GPUs), ``data`` (a
small JPEG tree), ``syncs`` (no host sync inside a plain training step, in every precision mode and with the
GPU decode: :class:`HostSyncs`, plus CUDA's own sync debug mode on a GPU), ``decode-pixels``
(``data.decode=gpu`` against the CPU decode, and pytorch/vision#9606's stress: decoding while queued kernels
still read memory just freed), ``fp32``, ``bf16``, ``channels-last``, ``compile`` (the run must say
"compiled"), ``throughput`` (rows (a) synthetic ceiling, (b) full JPEG pipeline, (c) timm's train.py),
``evaluate`` (1 and 10 crops; 1 crop must equal the run's own validation), ``resume``, ``decode-train``,
``throughput-gpu-decode`` (row (b) with ``data.decode=gpu``), ``ddp`` (NCCL, DDP and SyncBatchNorm with 2
processes; needs 2 GPUs).

``--dry-run`` runs the same steps on the CPU at tiny sizes (the test suite runs it): it checks this script
and every command it issues, not the GPU. What needs CUDA (``compile``: minutes on a CPU; the #9606 stress;
training with ``data.decode=gpu``) is SKIP there; ``ddp`` runs 2 gloo processes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import torch  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

# ------------------------------------------------------------------------------------ host-sync recording

# Calls that copy a device tensor to the host (each waits for the GPU to finish everything queued before).
_READS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
    torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu,
    torch.Tensor.nonzero, torch.nonzero, torch.Tensor.unique, torch.unique, torch.masked_select,
}  # fmt: skip
# Tensors built from host data on a named device: a blocking copy from pageable memory.
_MAKERS = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}
_MOVES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_}
_OURS = str(REPO / "bn_inception")


class HostSyncs(TorchFunctionMode):
    """Records, per training step, the calls that make the host wait for the GPU, on any device.

    A CPU has nothing to wait for, so the calls are recorded by what they are: device-to-host reads
    (``item``, ``tolist``, ``bool(t)``, ``cpu()``, ``nonzero``, ...), tensors built from host data on a
    named device (``torch.tensor(x, device=...)``), and moves without ``non_blocking=True`` that cross
    devices or that our own code asks for. On CUDA, torch's sync debug mode adds every synchronisation
    that actually happened. ``step`` is the bucket events go to (the caller advances it); ``paused()``
    stops recording (the data loader, whose work is in worker processes on a GPU machine).
    """

    def __init__(self, cuda: bool = False) -> None:
        super().__init__()
        self.cuda, self.step, self._paused = cuda, 0, False
        self.events: dict[int, list[str]] = defaultdict(list)
        self._caught: list[warnings.WarningMessage] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._paused:
            what = _sync_call(func, args, kwargs)
            if what:
                self.events[self.step].append(f"{what} at {_caller()}")
        return func(*args, **kwargs)

    def advance(self) -> None:
        """The next step begins: what CUDA reported so far belongs to the one that ends."""
        self._collect()
        self.step += 1

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._collect()
        self._paused = True
        try:
            yield
        finally:
            self._caught.clear()  # syncs CUDA reported while paused are not the step's
            self._paused = False

    def _collect(self) -> None:
        for w in self._caught:
            if "synchronizing" in str(w.message):
                self.events[self.step].append(f"CUDA sync at {w.filename}:{w.lineno}")
        self._caught.clear()

    def __enter__(self):
        if self.cuda:
            self._warnings = warnings.catch_warnings(record=True)
            self._caught = self._warnings.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return super().__enter__()

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
            self._collect()
            self._warnings.__exit__(*exc)
        return super().__exit__(*exc)


def _sync_call(func, args, kwargs) -> str | None:
    if func in _READS:
        return f"{func.__name__}()"
    if func in _MAKERS and kwargs.get("device") is not None:
        return f"{func.__name__}(..., device={kwargs['device']})"
    if func not in _MOVES or kwargs.get("non_blocking") or any(a is True for a in args[2:]):
        return None  # (a positional True after the target is non_blocking in to() and copy_())
    if func is torch.Tensor.copy_:  # copy_(dst, src): a sync only across devices
        dst, src = args[0], args[1]
        crosses = isinstance(src, torch.Tensor) and src.device != dst.device
        return f"blocking copy_ from {src.device} to {dst.device}" if crosses else None
    target = _target_device(func, args, kwargs)
    if target is None:  # a dtype or layout change
        return None
    if args[0].device != target or _caller().startswith(_OURS):  # on a CPU no move crosses: ours count
        return f"blocking {func.__name__}({target})"
    return None


def _target_device(func, args, kwargs) -> torch.device | None:
    if func is torch.Tensor.cuda:
        return torch.device("cuda")
    for a in (*args[1:], kwargs.get("device")):
        if isinstance(a, torch.Tensor):
            return a.device
        if isinstance(a, torch.device):
            return a
        if isinstance(a, str):
            return torch.device(a)
    return None


def _caller() -> str:
    """The first frame outside torch's dispatch and this file: who asked."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in (__file__, _OVERRIDES):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"


_OVERRIDES = torch.overrides.__file__


def step_syncs(overrides: list[str], run_dir: Path) -> tuple[dict[int, list[str]], list[int]]:
    """Train (``train``, what train.py runs) under :class:`HostSyncs`; returns the events of
    each step and the plain steps: neither the first (one-time set-up), nor a log, evaluation or
    finite-check step, which read the device on purpose."""
    from bn_inception.cli import compose
    from bn_inception.config import train_config
    from bn_inception.data import loader as data_loader
    from bn_inception.data.loader import TrainLoader
    from bn_inception.engine.precision import resolve_device
    from bn_inception.engine.trainer import train

    config = compose("train", overrides)  # train.py's composed, resolved config
    trainer = config["trainer"]
    syncs = HostSyncs(cuda=resolve_device(trainer["device"]).type == "cuda")
    fetch, receive = TrainLoader.__next__, data_loader._next_batch

    def next_batch(loader):  # each step starts with its batch
        syncs.advance()
        return fetch(loader)

    def received(iterator):  # the DataLoader's own hand-over; a GPU decode after it counts in the step
        with syncs.paused():
            return receive(iterator)

    TrainLoader.__next__, data_loader._next_batch = next_batch, received
    try:
        with syncs:
            train(train_config(config), run_dir)
    finally:
        TrainLoader.__next__, data_loader._next_batch = fetch, receive
    every = trainer["finite_check_every"] if trainer["finite_check"] == "sync" else math.inf
    plain = [
        k
        for k in range(2, trainer["max_steps"] + 1)
        if k % trainer["log_every"] and k % trainer["eval_every"] and k % every and k != trainer["max_steps"]
    ]
    return dict(syncs.events), plain


# ------------------------------------------------------------------------------------------------ steps


@dataclass
class Context:
    out: Path
    dry: bool
    cuda: bool
    gpus: int
    timm_train: Path | None
    log: Callable[[str], None]

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    @property
    def tree(self) -> Path:
        return self.out / "tree"

    def train_args(self, name: str, *extra: str) -> list[str]:
        """train.py's overrides for a short run of BN-x5 on the tree (224 px; 32 px in a dry run)."""
        steps = 6 if self.dry else 20
        return [
            "experiment=bn_x5", "data=imagenet", f"data.root={self.tree}", f"data.index={self.out / 'index'}",
            f"data.input_size={32 if self.dry else 224}", f"data.workers={1 if self.dry else 8}",
            "data.decode=cpu", f"trainer.device={self.device}", f"trainer.max_steps={steps}",
            f"trainer.eval_every={steps // 2}", "trainer.log_every=3",
            f"trainer.batch_size={8 if self.dry else 32}",
            "trainer.eval_batch_size=32", "trainer.probe_images=32", "trainer.progress=false",
            "trainer.compile=false", "trainer.channels_last=false", "trainer.amp=none",
            f"hydra.run.dir={self.out / name}", *extra,
        ]  # fmt: skip


Result = tuple[str, str]  # (PASS | FAIL | SKIP, one line)
CHANNELS_LAST = ("trainer.amp=bf16", "trainer.channels_last=true")  # the GPU defaults, without compile


def run(ctx: Context, cmd: list[str], name: str, limit: float, env: dict | None = None) -> tuple[int, str]:
    """Run ``cmd`` in its own process group, killed after ``limit`` s; (exit status, its output), also
    written to ``<out>/<name>.log``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0", **(env or {})}
    if ctx.dry:
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        text, _ = proc.communicate(timeout=limit)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        status, text = -1, text + f"\n(timed out after {limit:.0f} s)"
    (ctx.out / f"{name}.log").write_text(text)
    return status, text


def train(ctx: Context, name: str, limit: float, *extra: str, launcher: list[str] | None = None) -> Result:
    """A train.py run that must complete with finite losses; the first line of its failure otherwise."""
    cmd = [*(launcher or [sys.executable]), str(REPO / "train.py"), *ctx.train_args(name, *extra)]
    status, text = run(ctx, cmd, name, limit)
    results = _json(ctx.out / name / "results.json")
    if status != 0 or results.get("status") != "completed":
        return "FAIL", f"exit {status}, status {results.get('status')}: {_last_error(text)} ({name}.log)"
    losses = [e["train_loss"] for e in results["evals"]]
    if not all(math.isfinite(v) for v in losses):
        return "FAIL", f"non-finite training loss {losses}"
    compile_line = next((ln for ln in text.splitlines() if "torch.compile:" in ln), "")
    said = compile_line.split("torch.compile:", 1)[1].split(", non-finite")[0].strip()
    rate, top1 = results["img_per_s"], results["final_top1"]
    return "PASS", f"{results['steps']} steps, {rate:.0f} img/s, top-1 {top1:.1f}%; {said}"


def step_env(ctx: Context, limit: float) -> Result:
    from bn_inception.engine.precision import unusable_gpu

    versions = f"torch {torch.__version__}, CUDA build {torch.version.cuda}"
    if ctx.dry:
        return "PASS", f"dry run on the CPU ({versions})"
    if not ctx.cuda:
        return "FAIL", f"no usable GPU: {unusable_gpu() or 'torch.cuda.is_available() is False'}"
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(ctx.gpus))
    driver = "unknown (no nvidia-smi)"
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        status, smi = run(ctx, query, "env", limit)
        driver = smi.split()[0] if status == 0 and smi.strip() else "unknown"
    return "PASS", f"{ctx.gpus} GPU(s): {names}; driver {driver}; {versions}"


def step_data(ctx: Context, limit: float) -> Result:
    size = ["64", "48"] if ctx.dry else ["320", "240"]
    cmd = [sys.executable, str(REPO / "scripts" / "make_synthetic_imagenet.py"), str(ctx.tree),
           "--classes", "4", "--train-per-class", "16" if ctx.dry else "64",
           "--val-per-class", "8" if ctx.dry else "16", "--image-size", *size, "--noise", "18"]  # fmt: skip
    status, text = run(ctx, cmd, "data", limit)
    if status != 0:
        return "FAIL", f"exit {status}: {_last_error(text)} (data.log)"
    return "PASS", f"{sum(1 for _ in ctx.tree.rglob('*.JPEG'))} JPEGs of {'x'.join(size)} px in {ctx.tree}"


def step_compile(ctx: Context, limit: float) -> Result:
    if ctx.dry:
        return "SKIP", "dry run: compiling the network takes minutes on a CPU"
    verdict, detail = train(ctx, "compile", limit, "trainer.amp=bf16", "trainer.channels_last=true",
                            "trainer.compile=true")  # fmt: skip
    if verdict == "PASS" and "compiled" not in detail:
        return "FAIL", f"trained, but eagerly: {detail}"
    return verdict, detail


def step_probe(ctx: Context, limit: float, probe: str) -> Result:
    """A probe below, in its own process; it prints one JSON line {"verdict": ..., "detail": ...}."""
    cmd = [sys.executable, __file__, "--probe", probe, "--out", str(ctx.out)] + ["--dry-run"] * ctx.dry
    status, text = run(ctx, cmd, probe, limit)
    lines = [ln for ln in text.splitlines() if ln.startswith('{"verdict"')]
    if status != 0 or not lines:
        return "FAIL", f"exit {status}: {_last_error(text)} ({probe}.log)"
    result = json.loads(lines[-1])
    return result["verdict"], result["detail"]


def step_decode_train(ctx: Context, limit: float) -> Result:
    if ctx.dry:
        return "SKIP", "dry run: data.decode=gpu needs CUDA (decode-pixels runs the device path on the CPU)"
    return train(ctx, "decode-train", limit, "data.decode=gpu", *CHANNELS_LAST)


def step_ddp(ctx: Context, limit: float) -> Result:
    if not ctx.dry and ctx.gpus < 2:
        return "SKIP", f"{ctx.gpus} GPU: NCCL, DDP and SyncBatchNorm need 2 processes on 2 GPUs"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    sync_bn = ["trainer.sync_bn=true"] * ctx.cuda  # SyncBatchNorm runs on GPUs only
    verdict, detail = train(ctx, "ddp", limit, *sync_bn, "trainer.compile=auto", launcher=torchrun)
    said = (ctx.out / "ddp.log").read_text()
    if verdict == "PASS" and "2 process(es)" not in said:
        return "FAIL", "ran, but not as 2 processes"
    return verdict, detail


def step_evaluate(ctx: Context, limit: float) -> Result:
    """1 and 10 crops of the fp32 run's checkpoint (and 1 crop decoded on the GPU); the 1-crop error must be
    the run's own last validation (the same images, transform and precision), up to one image."""
    run_dir, end = ctx.out / "fp32", time.monotonic() + limit
    results = _json(run_dir / "results.json")
    if results.get("status") != "completed":
        return "SKIP", "needs the fp32 run's checkpoint"
    rows = {}
    gpu_decode = ["data=imagenet", f"data.root={ctx.tree}", f"data.index={ctx.out / 'index'}",
                  f"data.input_size={32 if ctx.dry else 224}", "data.decode=gpu"]  # fmt: skip
    for crops, data in [("1", []), ("10", [])] + [("1", gpu_decode)] * ctx.cuda:
        name = f"evaluate-{crops}" + "-gpu-decode" * bool(data)
        cmd = [sys.executable, str(REPO / "evaluate.py"), f"checkpoints={run_dir}/checkpoints/last.pt",
               f"crops={crops}", f"device={ctx.device}", "amp=none", "channels_last=false", "progress=false",
               "bootstrap=0", f"output={ctx.out / name}.json", *data]  # fmt: skip
        status, text = run(ctx, cmd, name, max(1.0, end - time.monotonic()))
        if status != 0:
            return "FAIL", f"{name}: exit {status}: {_last_error(text)} ({name}.log)"
        rows[name] = _json(ctx.out / f"{name}.json")["rows"][0]
    errors = {name: row["top1_err"] for name, row in rows.items()}
    own = 100.0 - results["final_top1"]
    detail = (
        ", ".join(f"{k}: top-1 error {v:.2f}%" for k, v in errors.items()) + f"; the run's own {own:.2f}%"
    )
    one_image = 100.0 / rows["evaluate-1"]["images"]
    return ("PASS" if abs(errors["evaluate-1"] - own) <= one_image + 1e-6 else "FAIL"), detail


def step_resume(ctx: Context, limit: float) -> Result:
    """Half the run, then the same command with the full length: it must continue, not restart. With
    trainer.deterministic=true, as exact resumes need (any op without a deterministic CUDA kernel raises)."""
    steps, end = (6 if ctx.dry else 20), time.monotonic() + limit
    half = (f"trainer.max_steps={steps // 2}", f"trainer.eval_every={steps // 2}")
    same = ("trainer.amp=bf16", "trainer.deterministic=true")
    first = train(ctx, "resume", limit / 2, *half, *same)
    if first[0] != "PASS":
        return first
    verdict, detail = train(ctx, "resume", max(1.0, end - time.monotonic()), *same)
    if verdict == "PASS" and f"at step {steps // 2}" not in (ctx.out / "resume.log").read_text():
        return "FAIL", "the second launch did not resume from the first one's checkpoint"
    return verdict, detail


def step_throughput(ctx: Context, limit: float, decode: str = "auto") -> Result:
    """benchmarks/train_throughput.py's rows (a) synthetic ceiling, (b) full JPEG pipeline and, with
    --timm-train, (c) timm's train.py; with ``decode=gpu`` row (b) alone, JPEGs decoded on the GPU. Its table
    is printed; a compile that fell back to eager fails the step (the rows would not be the GPU defaults)."""
    if ctx.dry and decode == "gpu":
        return "SKIP", "dry run: data.decode=gpu needs CUDA"
    if ctx.dry:
        args = ["--device", "cpu", "--modes", "synthetic,pipeline", "--batch", "4", "--steps", "2",
                "--warmup", "2", "--images", "64", "--classes", "4", "--workers", "1",
                "--model", "bn_inception_small", "--input-size", "32"]  # fmt: skip
    else:
        modes = "pipeline" if decode == "gpu" else "synthetic,pipeline" + ",timm" * bool(ctx.timm_train)
        args = ["--device", "cuda", "--modes", modes, "--decode", decode, "--steps", "100", "--warmup", "30",
                "--images", "2048", "--workers", str(max(1, (os.cpu_count() or 2) - 1))]  # fmt: skip
        args += ["--timm-train", str(ctx.timm_train)] if ctx.timm_train and decode != "gpu" else []
    name = "throughput" + "-gpu-decode" * (decode == "gpu")
    status, text = run(
        ctx, [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), *args], name, limit
    )
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    if status != 0 or not table:
        return "FAIL", f"exit {status}: {_last_error(text)} ({name}.log)"
    ctx.log("\n".join(["", f"python benchmarks/train_throughput.py {' '.join(args)}", *table, ""]))
    if "torch.compile: eager" in text:
        return "FAIL", f"measured eagerly: {_last_error(text)}"
    return "PASS", f"{len(table) - 2} rows (table above)"


STEPS: list[tuple[str, float, Callable[[Context, float], Result], bool]] = [
    # name, timeout (s), step, needs CUDA outside a dry run; the most telling first, in case time runs out
    ("env", 30, step_env, False),
    ("data", 60, step_data, True),
    ("syncs", 150, lambda c, t: step_probe(c, t, "syncs"), True),
    ("decode-pixels", 90, lambda c, t: step_probe(c, t, "decode"), True),
    ("fp32", 90, lambda c, t: train(c, "fp32", t), True),
    ("bf16", 90, lambda c, t: train(c, "bf16", t, "trainer.amp=bf16"), True),
    ("channels-last", 90, lambda c, t: train(c, "channels-last", t, *CHANNELS_LAST), True),
    ("compile", 240, step_compile, True),
    ("throughput", 240, step_throughput, True),
    ("evaluate", 90, step_evaluate, True),
    ("resume", 120, step_resume, True),
    ("decode-train", 90, step_decode_train, True),
    ("throughput-gpu-decode", 120, lambda c, t: step_throughput(c, t, "gpu"), True),
    ("ddp", 240, step_ddp, True),
]  # fmt: skip


# ----------------------------------------------------------------------------------------------- probes


def probe_syncs(ctx: Context) -> Result:
    """No host sync on a plain training step, in every precision mode this device runs (one process)."""
    modes = [["trainer.amp=none"], ["trainer.amp=bf16", "trainer.channels_last=true"],
             ["trainer.finite_check=sync", "trainer.finite_check_every=4"]]  # fmt: skip
    if ctx.cuda:  # fp16 with its GradScaler, and the JPEGs decoded on the GPU
        modes += [["trainer.amp=fp16", "trainer.channels_last=true"], ["data.decode=gpu", *CHANNELS_LAST]]
    found = []
    for k, mode in enumerate(modes):
        args = ctx.train_args(f"syncs-{k}", "trainer.max_steps=12", "trainer.eval_every=12",
                              "trainer.log_every=6", "trainer.finite_check=device", *mode)  # fmt: skip
        events, plain = step_syncs([a for a in args if not a.startswith("hydra.")], ctx.out / f"syncs-{k}")
        bad = {s: events[s] for s in plain if events.get(s)}
        if bad:
            found.append(f"{' '.join(mode)}: step {min(bad)}: {'; '.join(bad[min(bad)])}")
    modes_text = " | ".join(" ".join(m) for m in modes)
    return ("FAIL", "; ".join(found)) if found else ("PASS", f"0 syncs on plain steps ({modes_text})")


def probe_decode(ctx: Context) -> Result:
    """data.decode=gpu's pixels against the CPU path's (same crops, flips and colours), then decoding while
    queued kernels still read memory just freed (pytorch/vision#9606), with and without the side stream."""
    from bn_inception.data import build_datasets, to_model_input
    from bn_inception.data.device import _decode_jpegs, decode_jpegs

    device = torch.device(ctx.device)
    levels = []
    for split in ("train", "val"):
        out = []
        for decode in ("cpu", "gpu"):
            splits = build_datasets("imagenet", root=str(ctx.tree), input_size=32 if ctx.dry else 224, seed=3,
                                    index=str(ctx.out / "index"), workers=0, distortion="full")  # fmt: skip
            data = getattr(splits, split)
            data.decode_device = device if decode == "gpu" else None  # a dry run: the same code on the CPU
            keys = [(i, 1) for i in range(min(64, len(data)))] if split == "train" else list(range(len(data)))
            images, _, _ = data.load_batch(keys)
            images = images.decode() if decode == "gpu" else images  # what the loader does
            out.append(to_model_input(images, (0.0, 0.0, 0.0), (1 / 255,) * 3, device))  # 0-255 levels
        levels.append((out[0] - out[1]).abs().mean(dim=(1, 2, 3)))
    levels = torch.cat(levels).cpu()
    detail = f"GPU vs CPU decode: {levels.mean():.2f} levels on average, worst image {levels.max():.2f}"
    if levels.mean() > 1.5 or levels.max() > 4.0:
        return "FAIL", detail
    if not ctx.cuda:
        return "PASS", detail + "; the #9606 stress needs CUDA"
    splits = build_datasets(
        "imagenet", root=str(ctx.tree), input_size=224, index=str(ctx.out / "index"), workers=0
    )
    splits.val.decode_device = device
    batch, _, _ = splits.val.load_batch(list(range(32)))
    unprotected = _stress(batch, device, lambda: _decode_jpegs(batch.data, device, batch.paths))
    protected = _stress(batch, device, lambda: decode_jpegs(batch.data, device, batch.paths))
    detail += f"; #9606 stress: {protected} of 50 corrupted on a side stream ({unprotected} of 50 without it)"
    return ("PASS" if protected == 0 else "FAIL"), detail


def _stress(
    batch, device: torch.device, decode: Callable[[], list[torch.Tensor]], iterations: int = 50
) -> int:
    """pytorch/vision#9606's check: tensors of the decoded images' sizes, read by reductions queued behind a
    long kernel and freed before the decode; a reduction or an image that comes out wrong is a corruption."""
    reference = [t.clone() for t in decode()]
    torch.cuda.synchronize()
    corrupted = 0
    for _ in range(iterations):
        filled = [torch.full(t.shape, 1, dtype=torch.uint8, device=device) for t in reference]
        torch.cuda.synchronize()
        torch.cuda._sleep(20_000_000)  # ~10 ms of GPU time: the reductions wait behind it
        sums = [t.sum(dtype=torch.int64) for t in filled]
        del filled
        images = decode()
        torch.cuda.synchronize()
        wrong_sums = any(s.item() != t.numel() for s, t in zip(sums, reference, strict=True))
        wrong_images = any(not torch.equal(a, b) for a, b in zip(images, reference, strict=True))
        corrupted += wrong_sums or wrong_images
    return corrupted


PROBES = {"syncs": probe_syncs, "decode": probe_decode}


# ------------------------------------------------------------------------------------------------- main


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "Error", "RuntimeError", "ValueError", "("))]
    return (errors or lines or ["no output"])[-1][:300]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny sizes")
    parser.add_argument(
        "--timm-train", type=Path, default=None, help="timm's train.py (a repository checkout)"
    )
    parser.add_argument("--out", type=Path, default=None, help="logs and runs (default: a temporary folder)")
    parser.add_argument("--budget", type=float, default=480, help="seconds for all steps together")
    parser.add_argument("--only", default=None, help="comma list of steps (default: all)")
    parser.add_argument("--probe", choices=sorted(PROBES), help=argparse.SUPPRESS)  # run by the steps
    args = parser.parse_args()
    if args.timm_train and not args.timm_train.is_file():
        parser.error(
            f"--timm-train {args.timm_train}: no such file (timm's train.py, from a repository checkout)"
        )
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.dry_run
    ctx = Context(out, args.dry_run, cuda, torch.cuda.device_count() if cuda else 0, args.timm_train,
                  lambda text: print(text, flush=True))  # fmt: skip
    if args.probe:
        verdict, detail = PROBES[args.probe](ctx)
        print(json.dumps({"verdict": verdict, "detail": detail}), flush=True)
        return 0
    only = set(args.only.split(",")) if args.only else {name for name, *_ in STEPS}
    unknown = only - {name for name, *_ in STEPS}
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; valid: {', '.join(name for name, *_ in STEPS)}")
    start = time.monotonic()
    deadline = start + args.budget
    ctx.log(f"gpu_check{' --dry-run' if ctx.dry else ''}: logs and runs in {out}")
    failed = False
    for name, timeout, step, needs_cuda in STEPS:
        if name not in only:
            continue
        left = deadline - time.monotonic()
        t0 = time.monotonic()
        if needs_cuda and not (ctx.cuda or ctx.dry):
            verdict, detail = "SKIP", "no usable GPU (see env)"
        elif left < 10:
            verdict, detail = "SKIP", f"out of time (--budget {args.budget:.0f} s)"
        else:
            try:
                verdict, detail = step(ctx, left if ctx.dry else min(timeout, left))  # a CPU's pace: no hint
            except Exception as e:  # noqa: BLE001 - one step's crash is that step's FAIL, the others go on
                verdict, detail = "FAIL", f"{type(e).__name__}: {e}"
        failed |= verdict == "FAIL"
        ctx.log(f"{verdict:4}  {name:21} {time.monotonic() - t0:5.0f} s  {detail}")
    ctx.log(f"{'FAILED' if failed else 'passed'} in {time.monotonic() - start:.0f} s; logs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
