"""Evaluation with device decoding (data.decode=gpu), run on the CPU: the evaluator's crops cut from a
batch decoded in one call by the loader equal the per-image CPU crops."""

from __future__ import annotations

import pytest
import timm
import torch

import bn_inception  # noqa: F401  (registers the models)
from bn_inception.data import build_datasets, build_eval_loader, make_synthetic_imagenet
from bn_inception.data.device import EncodedBatch
from bn_inception.evaluation.evaluator import MultiCropImages, member_probs

CPU = torch.device("cpu")
SIZES = [16, 24]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    # Images small enough for a full-scale decode at these sizes, as nvJPEG always decodes.
    make_synthetic_imagenet(root, num_classes=3, train_per_class=2, val_per_class=4, min_size=30, max_size=44)
    return build_datasets("imagenet", root=str(root), input_size=16, seed=0)


def _views(splits, crops: int, on_device: bool):
    splits.val.decode_device = CPU if on_device else None
    try:
        return MultiCropImages(splits.val, crops, SIZES).load_batch(list(range(len(splits.val))))
    finally:
        splits.val.decode_device = None


@pytest.mark.parametrize("crops", [1, 10])
def test_device_views_equal_the_cpu_crops(splits, crops):
    cpu, labels, _ = _views(splits, crops, False)
    encoded, encoded_labels, _ = _views(splits, crops, True)
    assert isinstance(encoded, EncodedBatch) and torch.equal(labels, encoded_labels)
    on_device = encoded.decode()
    for size in SIZES:  # make_crops itself, on the same decoded pixels
        assert on_device[size].shape == cpu[size].shape == (len(labels), crops, 3, size, size)
        assert torch.equal(on_device[size], cpu[size])


def test_the_eval_loader_yields_the_crops_decoded_on_the_device(splits):
    splits.val.decode_device = CPU
    try:
        loader = build_eval_loader(MultiCropImages(splits.val, 10, SIZES), batch_size=5, workers=1)
        batches = list(loader)
        loader.close()
    finally:
        splits.val.decode_device = None
    cpu, labels, _ = _views(splits, 10, False)
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    for size in SIZES:
        assert torch.equal(torch.cat([views[size] for views, _ in batches]), cpu[size])


def test_members_see_the_same_inputs_either_way(splits):
    torch.manual_seed(0)
    model = timm.create_model("bn_mlp", num_classes=3, in_chans=3, img_size=16, norm="batch").eval()

    class M:  # the fields member_probs reads
        input_size, mean, std = 16, splits.mean, splits.std

    member = M()
    member.model = model
    with torch.no_grad():
        cpu = member_probs([member], _views(splits, 1, False)[0], CPU, None, False, 256)[0]
        dev = member_probs([member], _views(splits, 1, True)[0].decode(), CPU, None, False, 256)[0]
    torch.testing.assert_close(dev, cpu, atol=5e-3, rtol=0)
