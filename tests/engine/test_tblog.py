import torch
from torch import nn

from bn_inception.engine.tblog import ActivationPercentiles


def _probe_outputs(x: torch.Tensor, max_images: int = 512) -> dict[str, float]:
    act = nn.Sigmoid()
    probes = ActivationPercentiles({"hidden3_last": act}, max_images=max_images)
    with probes.recording():
        act(x)
    act(x + 100.0)  # outside recording(): must not count
    probes.remove()
    return probes.percentiles()


def test_percentiles_of_the_layer_and_of_its_first_unit():
    # unit 0 holds 0..99, unit 1 holds 1000..1099: pooled and single-unit percentiles differ widely
    x = torch.stack([torch.arange(100.0), torch.arange(100.0) + 1000.0], dim=1)
    out = _probe_outputs(x)
    assert set(out) == {f"act/hidden3_last{u}/p{p}" for u in ("", "/unit0") for p in (15, 50, 85)}
    assert out["act/hidden3_last/unit0/p50"] == torch.quantile(torch.arange(100.0), 0.5).item()
    assert out["act/hidden3_last/unit0/p85"] < 100.0
    assert out["act/hidden3_last/p15"] < 100.0 < 1000.0 < out["act/hidden3_last/p85"]


def test_a_convolutional_unit_is_one_channel_over_images_and_positions():
    x = torch.zeros(4, 3, 5, 5)
    x[:, 0] = torch.linspace(-1.0, 1.0, 4 * 25).reshape(4, 5, 5)
    x[:, 1:] = 50.0
    out = _probe_outputs(x, max_images=2)  # only the first two images are recorded
    first_two = torch.linspace(-1.0, 1.0, 100)[:50]
    assert out["act/hidden3_last/unit0/p50"] == torch.quantile(first_two, 0.5).item()
    assert out["act/hidden3_last/p85"] == 50.0
