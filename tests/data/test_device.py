"""The device side of the data pipeline: normalisation of uint8 batches, and the batched decode + crop +
resize + flip + colour path of data.decode=gpu, run here on CPU tensors (decoded on the CPU) against the
per-sample CPU pipeline."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from bn_inception.data import BadImageError, build_datasets, build_train_loader, to_model_input
from bn_inception.data.device import EncodedBatch, decode_jpegs, read_for_device, resolve_decode

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CPU = torch.device("cpu")


def _expected_input(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_to_model_input_normalises_any_layout_into_the_requested_one():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    for layout in (x, x.contiguous(memory_format=torch.channels_last)):
        for channels_last in (False, True):
            out = to_model_input(layout, MEAN, STD, CPU, channels_last=channels_last)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            assert out.dtype == torch.float32 and out.is_contiguous(memory_format=fmt)
            torch.testing.assert_close(out, _expected_input(x), atol=1e-6, rtol=0)
    assert to_model_input(x, MEAN, STD, CPU, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"expects a \(B, C, H, W\) batch"):
        to_model_input(x[0], MEAN, STD, CPU)


@pytest.fixture
def photo_tree(make_tree):
    # Images under twice the 32 px input: the CPU path decodes them at full scale, as nvJPEG does.
    return make_tree(num_classes=4, train_per_class=12, val_per_class=6, min_size=40, max_size=63, noise=6.0)


def _splits(tree, device_decode: bool, **kwargs):
    splits = build_datasets("imagenet", root=str(tree.root), input_size=32, seed=3, **kwargs)
    splits.train.decode_device = splits.val.decode_device = CPU if device_decode else None
    return splits


def _both(tree, split: str, distortion: str = "full") -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of ``split`` through the CPU path and the device path, as model inputs."""
    out = []
    for device_decode in (False, True):
        data = getattr(_splits(tree, device_decode, distortion=distortion), split)
        keys = [(i, 1) for i in range(len(data))] if split == "train" else list(range(len(data)))
        images, labels, _ = data.load_batch(keys)
        assert isinstance(images, EncodedBatch) == device_decode
        out.append((to_model_input(images.decode() if device_decode else images, MEAN, STD, CPU), labels))
    (a, labels_a), (b, labels_b) = out
    assert torch.equal(labels_a, labels_b) and a.shape == b.shape == (len(labels_a), 3, 32, 32)
    return a, b


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs() * torch.tensor(STD).view(1, 3, 1, 1) * 255


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)), (x[..., 1:] - x[..., :-1]).abs().mean().item()


@pytest.mark.parametrize("distortion", ["none", "full"])
def test_device_path_gives_the_cpu_paths_pixels_up_to_rounding(photo_tree, distortion):
    """Same crops, flips and colour parameters from the same draws; the CPU path rounds the resized and the
    distorted pixels to whole levels, the device path stays in float (the colour map can amplify the first
    rounding, up to ~1.5x)."""
    a, b = _both(photo_tree, "train", distortion)
    levels = _levels(a, b)
    assert levels.mean() < 0.5 and levels.max() <= 2.5
    a, b = _both(photo_tree, "val")
    levels = _levels(a, b)
    assert levels.mean() < 0.5 and levels.max() <= 1.5


def test_device_path_output_statistics_match_where_the_cpu_path_decodes_at_reduced_scale(make_tree):
    """Larger images: the CPU path decodes many crops at 1/2 or 1/4 JPEG scale (a DCT-domain low-pass), the
    device path resamples the full image; the pixel statistics of an epoch still agree."""
    tree = make_tree(num_classes=4, train_per_class=16, val_per_class=6, min_size=70, max_size=180, noise=6.0)
    for split in ("train", "val"):
        (mean_a, std_a, grad_a), (mean_b, std_b, grad_b) = (_stats(x) for x in _both(tree, split))
        torch.testing.assert_close(mean_b, mean_a, atol=0.02, rtol=0)
        torch.testing.assert_close(std_b, std_a, atol=0.02, rtol=0)
        assert abs(grad_b / grad_a - 1) < 0.1


def test_device_mode_keeps_the_cpu_paths_handling_of_odd_and_broken_files(make_tree):
    quirks = ("cmyk", "png_as_jpeg", "greyscale", "exif", "truncated", "empty", "not_image")
    tree = make_tree(num_classes=3, train_per_class=6, min_size=40, max_size=63, quirks=quirks)
    cpu, dev = _splits(tree, False), _splits(tree, True)
    keys = [(i, 0) for i in range(len(cpu.train))]
    a, labels_a, info_a = cpu.train.load_batch(keys)
    b, labels_b, info_b = dev.train.load_batch(keys)
    # The same replacements for the same unreadable files; CMYK and PNG files come decoded by the worker.
    assert torch.equal(labels_a, labels_b) and info_a == info_b and info_b["skipped"] == 3
    assert sum(t.dim() == 3 for t in b.data) == 2
    assert (a.float() - b.decode()).abs().mean() < 0.5


def test_encoded_batches_cross_loader_worker_processes_and_the_loader_decodes_them(photo_tree):
    """The loader yields the batch decoded on the device: the training loop sees one batch type."""
    dev = _splits(photo_tree, True, distortion="reduced")
    loader = build_train_loader(dev.train, batch_size=8, seed=3, workers=1)
    images, labels = next(loader)
    loader.close()
    reference, ref_labels, _ = dev.train.load_batch([(int(i), 0) for i in loader.rank_order(0)[:8]])
    assert isinstance(images, torch.Tensor) and images.shape == (8, 3, 32, 32)
    assert isinstance(reference, EncodedBatch) and torch.equal(labels, ref_labels)
    torch.testing.assert_close(images, reference.decode())


def test_a_jpeg_nobody_can_decode_is_named():
    garbage = torch.frombuffer(bytearray(b"\xff\xd8\xff\xdb" + bytes(range(200))), dtype=torch.uint8)
    with pytest.raises(BadImageError, match="cannot decode image broken.JPEG"):
        decode_jpegs([garbage], CPU, ["broken.JPEG"])


def test_decode_setting_resolves_by_device_and_dataset():
    assert resolve_decode("cpu", "cuda", True) is None
    assert resolve_decode("auto", "cpu", True) is None
    assert resolve_decode("auto", "cuda", True) is None  # the GPU path is experimental until measured
    assert resolve_decode("auto", None, True) is None
    with pytest.raises(ValueError, match="needs training on a CUDA device"):
        resolve_decode("gpu", "cpu", True)
    with pytest.raises(ValueError, match="held in memory"):
        resolve_decode("gpu", "cuda", False)


def test_gpu_decode_runs_on_a_side_stream_that_the_training_stream_waits_for(photo_tree, cuda_streams):
    """pytorch/vision#9606: nvJPEG writes its outputs from a private stream that does not wait for the
    caller's; on the training stream it can overwrite memory queued kernels still read. The decode must run
    with one side stream current (its outputs then come from that stream's pool), the training stream must
    wait for it, and every output must be recorded as used on the training stream (so its memory returns to
    the side stream's pool only after that use). Checked at the call level with stand-ins (no GPU here)."""
    paths = [str(p) for p in sorted((photo_tree.root / "train").rglob("*.JPEG"))[:3]]
    data = [read_for_device(p) for p in paths]
    cuda = torch.device("cuda")
    protocol = [
        ("decode", "side1", 3),
        ("wait_stream", "training", "side1"),
        *[("record_stream", "training")] * 3,
    ]
    for _ in range(2):  # one side stream, reused batch after batch
        cuda_streams.calls.clear()
        images = decode_jpegs(data, cuda, paths)
        assert cuda_streams.calls == protocol and cuda_streams.streams == 1
        assert [tuple(t.shape[1:]) for t in images] == [tuple(Image.open(p).size[::-1]) for p in paths]
    # A batch nvJPEG rejects is decoded image by image: still on the side stream, with the same protocol.
    cuda_streams.calls.clear()
    cuda_streams.fail_batched = True
    decode_jpegs(data, cuda, paths)
    assert cuda_streams.calls == [*protocol[:1], *[("decode", "side1", 1)] * 3, *protocol[1:]]
    cuda_streams.calls.clear()
    cuda_streams.fail_batched = False
    decode_jpegs(data, CPU, paths)  # the CPU decode (tests, the CPU device path) uses no streams
    assert cuda_streams.calls == [("decode", "training", 3)]
