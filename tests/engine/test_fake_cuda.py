"""The training loop, the evaluator's crop/ensemble maths and the GPU-decode plumbing on fake CUDA tensors.

torch's FakeTensorMode gives tensors a device and a shape but no data, so a model built on ``cuda`` runs
here without a GPU, and any CPU/CUDA mix raises as it would on a GPU (a data read such as ``item()`` raises
too). What it cannot run is replaced, each for a stated reason: autocast and GradScaler ask whether CUDA
exists (told yes); the fused SGD kernel has no fake kernel (given an empty one: the fake tensor still checks
that every argument is on one device); autograd's engine needs a CUDA context for CUDA tensors (the
backward gives each parameter a gradient on its own device, as autograd does); the stream API and nvJPEG
(stand-ins from tests/conftest.py). The loop also runs under benchmarks.gpu_check.HostSyncs, which here
sees real devices: a blocking copy from the CPU to the fake GPU on a plain step fails the test.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from PIL import Image
from torch._subclasses.fake_tensor import FakeTensorMode

from benchmarks.gpu_check import HostSyncs
from bn_inception.config import OptimConfig
from bn_inception.data import build_datasets
from bn_inception.data.device import EncodedBatch, _normalise_constants, read_for_device
from bn_inception.data.synthetic import make_synthetic_imagenet
from bn_inception.engine.distributed import DistInfo
from bn_inception.engine.schedule import build_lr_schedule
from bn_inception.engine.step import NonFiniteGuard, TrainStep
from bn_inception.engine.trainer import Meter, RunState, build_optimizer, train_loop
from bn_inception.evaluation.checkpoints import Member
from bn_inception.evaluation.crops import make_crops
from bn_inception.evaluation.ensemble import distinct_crops, ensemble_probs, topk_correct
from bn_inception.evaluation.evaluator import cut_views, member_probs

CUDA = torch.device("cuda", 0)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
STEPS = 4


@pytest.fixture
def fake_cuda(monkeypatch, cuda_streams):
    """A FakeTensorMode (entered by the test, once its real inputs exist) and the stand-ins above."""
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    library = torch.library.Library("aten", "IMPL")
    library.impl("_fused_sgd_", lambda *args, **kwargs: None, "Meta")
    cuda_streams.device = CUDA
    _normalise_constants.cache_clear()  # cached per device: fake tensors must not outlive their mode
    yield FakeTensorMode(allow_non_fake_inputs=True)
    _normalise_constants.cache_clear()
    library._destroy()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_synthetic_imagenet(tmp_path_factory.mktemp("fake_cuda") / "tree", min_size=40, max_size=63)


def _backward_on_the_device(monkeypatch, model):
    def backward(loss, *args, **kwargs):
        assert loss.device == CUDA and loss.dim() == 0
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # on the parameter's device, as autograd puts it

    monkeypatch.setattr(torch.Tensor, "backward", backward)


def _fake_run(model, batches, syncs, amp, channels_last, finite_check):
    def loader():  # runs dry after STEPS batches: train_loop stops with StopIteration before any log step
        for images, labels in batches:
            syncs.advance()
            # data.decode=gpu: TrainLoader hands the loop the batch decoded on the device, as here
            yield (images.decode() if isinstance(images, EncodedBatch) else images), labels

    optimizer = build_optimizer(model, OptimConfig(), 0.01, CUDA, fused=True)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    guard = NonFiniteGuard(finite_check, 1000, optimizer, scaler, CUDA)
    return SimpleNamespace(
        state=RunState(),
        trainer=SimpleNamespace(max_steps=1000, log_every=1000, eval_every=1000),
        loader=loader(),
        raw_model=model,
        progress=SimpleNamespace(start=lambda step: None, advance=lambda: None, data_wait=0.0),
        dist=DistInfo(CUDA),
        stop=SimpleNamespace(requested=lambda: False),
        splits=SimpleNamespace(mean=MEAN, std=STD),
        channels_last=channels_last,
        lr_schedule=build_lr_schedule(optimizer, 1000, 0.96),
        step=TrainStep(model, optimizer, scaler, CUDA, amp, guard=guard),
        meter=Meter(CUDA),
    )


@pytest.mark.parametrize(
    "amp, channels_last, finite_check, decode",
    [
        (None, False, "device", False),
        (torch.bfloat16, True, "device", False),
        (torch.float16, True, "sync", False),  # GradScaler; the guard's loss read every 1000 steps
        (torch.bfloat16, True, "device", True),  # data.decode=gpu: JPEG bytes decoded on the device
    ],
    ids=["fp32", "bf16-channels-last", "fp16-gradscaler", "bf16-gpu-decode"],
)
def test_the_training_loop_on_fake_cuda(
    fake_cuda, monkeypatch, cuda_streams, tree, amp, channels_last, finite_check, decode
):
    torch.manual_seed(0)
    splits = build_datasets(
        "imagenet", root=str(tree.root), input_size=32, workers=0, index=str(tree.root / "i")
    )
    splits.train.decode_device = CUDA if decode else None
    batches = [splits.train.load_batch([(i, 0) for i in range(k, k + 8)])[:2] for k in range(0, 8 * STEPS, 8)]
    assert isinstance(batches[0][0], EncodedBatch) == decode
    syncs = HostSyncs()
    with fake_cuda, syncs:
        model = _model(32, channels_last, drop_rate=0.1)
        _backward_on_the_device(monkeypatch, model)
        run = _fake_run(model, batches, syncs, amp, channels_last, finite_check)
        with pytest.raises(StopIteration):
            train_loop(run)
        assert run.state.step == STEPS and run.meter.sums.device == CUDA
        assert all(p.device == CUDA for p in [*model.parameters(), *model.buffers()])
    assert {s: e for s, e in syncs.events.items() if s >= 2} == {}
    if decode:
        assert ("decode", "side1", 8) in cuda_streams.calls


def test_a_cpu_tensor_in_the_step_is_caught(fake_cuda, monkeypatch):
    """The check can fail: a meter left on the CPU adds the device's loss to host memory."""
    batch = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
    with fake_cuda:
        model = _model(32, False)
        _backward_on_the_device(monkeypatch, model)
        run = _fake_run(model, [batch], HostSyncs(), None, False, "device")
        run.meter = Meter(torch.device("cpu"))
        with pytest.raises(RuntimeError, match="found at least two devices"):
            train_loop(run)


def test_evaluator_crop_and_ensemble_maths_on_fake_cuda(fake_cuda, cuda_streams, tree):
    """Two members of different input sizes and normalisations, 1 and 10 crops, from uint8 crops made on the
    CPU and from JPEG bytes decoded and cut on the device (data.decode=gpu); softmax averaged over crops,
    then over members, and top-k hits, all on the device."""
    paths = [str(p) for p in sorted(Path(tree.root, "val").rglob("*.JPEG"))[:4]]
    labels = torch.arange(4)
    sizes = (32, 40)
    images = [Image.open(p).convert("RGB") for p in paths]
    cpu_views = {c: {s: torch.stack([make_crops(im, c, s) for im in images]) for s in sizes} for c in (1, 10)}
    encoded = [read_for_device(p) for p in paths]
    # equal crops are found on the host, before the device (predict() does the same with real tensors)
    distinct = {c: {s: distinct_crops(v) for s, v in cpu_views[c].items()} for c in (1, 10)}
    with fake_cuda:
        members = [
            Member(f"m{s}", Path(f"m{s}.pt"), _model(s, True).eval(), s, mean, std, 3, ("a", "b", "c", "d"))
            for s, (mean, std) in zip(sizes, [(MEAN, STD), ((0.5,) * 3, (0.25,) * 3)], strict=True)
        ]
        labels_dev = labels.to(CUDA, non_blocking=True)
        for crops in (1, 10):
            # what the eval loader yields with data.decode=gpu: the batch decoded and cut on the device
            cut = partial(cut_views, crops=crops, sizes=sizes)
            on_device = EncodedBatch(encoded, paths, CUDA, cut).decode()
            for views, known in ((cpu_views[crops], distinct[crops]), (on_device, None)):
                probs = member_probs(
                    members, views, CUDA, torch.bfloat16, True, forward_batch=64, distinct=known
                )
                assert [(p.device, p.dtype, tuple(p.shape)) for p in probs] == [
                    (CUDA, torch.float32, (4, 4))
                ] * 2
                hits = [topk_correct(p, labels_dev) for p in [*probs, ensemble_probs(probs)]]
                assert all(h.device == CUDA and h.shape == (4, 2) for h in hits)
    assert cuda_streams.calls.count(("decode", "side1", 4)) == 2


def _model(size: int, channels_last: bool, **kwargs) -> torch.nn.Module:
    """bn_inception_small on the fake GPU. Module.to(memory_format=...) would swap the fake parameters
    (torch.utils.swap_tensors), which refuses tensors the fake mode holds weak references to; setting
    ``.data`` gives the same layout."""
    model = timm.create_model(
        "bn_inception_small", num_classes=4, in_chans=3, img_size=size, device=CUDA, **kwargs
    )
    for p in model.parameters():
        if channels_last and p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model
