"""Single-crop validation during training: top-1/top-5 accuracy (%) on the val split (Sec. 4.2.2)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bn_inception.data.device import to_model_input
from bn_inception.engine.distributed import all_reduce_sum
from bn_inception.engine.precision import autocast_context


@torch.no_grad()
def validate(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    *,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, float]:
    """``top1``, ``top5`` (percent), ``loss`` (mean cross-entropy) and ``images`` of ``model`` (in eval mode)
    over a loader's ``batches``, summed over processes: each evaluates its own exact shard (no padding
    sampler, which would count images twice). ``to_model_input`` normalises with ``mean``/``std``."""
    was_training = model.training
    model.eval()
    # Sums stay on the device; one transfer at the end instead of a host sync per batch.
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    for batch in batches:
        images = to_model_input(batch[0], mean, std, device, channels_last)
        labels = batch[1].to(device, non_blocking=True)
        with autocast_context(device, amp_dtype):
            logits = model(images)
        logits = logits.float()
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        loss = F.cross_entropy(logits, labels, reduction="sum")
        count = torch.full((), labels.numel(), device=device)  # filled on the device: no host sync
        totals += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(), loss, count]).to(torch.float64)
    model.train(was_training)
    top1, top5, loss_sum, n = all_reduce_sum(totals).tolist()
    if n == 0:
        raise RuntimeError("the validation split yielded no images; check data.root and trainer.eval_limit")
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "loss": loss_sum / n, "images": int(n)}
