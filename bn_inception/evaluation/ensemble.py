"""Probabilities averaged over crops, then over ensemble members (Sec. 4.2.3: arithmetic means of softmax
probabilities), top-k hits, errors in percent (the paper's tables) and paired bootstrap intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

TOPK = (1, 5)  # the paper reports top-1 and top-5 error


def crop_averaged_probs(
    logits: torch.Tensor, n_crops: int, counts: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax ``[B, K]`` averaged over each image's ``n_crops`` adjacent rows, weighted by ``counts``."""
    probs = logits.float().softmax(dim=-1).view(-1, n_crops, logits.shape[-1])
    if counts is None:
        return probs.mean(dim=1)
    weights = counts.to(probs.device, torch.float32)
    return (probs * (weights / weights.sum()).view(1, -1, 1)).sum(dim=1)


def distinct_crops(views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions ``[D]``, counts ``[D]``): the crops of ``[B, n_crops, ...]`` that differ for some image, in
    order, and how many crops each stands for. A square image's 144 crops are 48 distinct ones, 3 times each:
    once each, weighted, gives the same average for a third of the passes. Found by content
    (``torch.unique``), so no crop geometry is restated."""
    n = views.shape[1]
    if views.device.type != "cpu":  # on a GPU (views decoded there) every crop is evaluated: finding the
        every = torch.arange(n, device=views.device)  # equal ones would cost a host sync per batch
        return every, torch.ones_like(every)
    flat = views.transpose(0, 1).reshape(n, -1)
    _, inverse, counts = torch.unique(flat, dim=0, return_inverse=True, return_counts=True)
    positions = torch.arange(n, device=inverse.device)
    first = torch.full_like(counts, n).scatter_reduce(0, inverse, positions, reduce="amin")
    order = first.argsort()
    return first[order], counts[order]


def ensemble_probs(member_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(member_probs)).mean(dim=0)


def topk_correct(probs: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = TOPK) -> torch.Tensor:
    """Bool ``[B, len(ks)]``: label among the top k (one sorted ``topk``: a top-1 hit is a top-5 hit)."""
    maxk = min(max(ks), probs.shape[-1])
    top = probs.topk(maxk, dim=-1, largest=True, sorted=True).indices
    hit = top == labels.view(-1, 1).to(top.device)
    return torch.stack([hit[:, : min(k, maxk)].any(dim=1) for k in ks], dim=1)


def error_percent(correct: np.ndarray) -> np.ndarray:
    return 100.0 * (1.0 - correct.mean(axis=0))


def bootstrap_mean_ci(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> np.ndarray:
    """Percentile-bootstrap intervals ``[..., 2]`` of ``100 * mean`` per column of ``values`` ``[N(, R)]``,
    every column with the same draws (paired), which depend only on ``seed`` and N (a model's interval is the
    same alone or with others); counts per image x values keeps memory O(chunk x N)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    squeeze = values.ndim == 1
    values = np.asarray(values, dtype=np.float64).reshape(values.shape[0], -1)
    n = values.shape[0]
    if n == 0:
        raise ValueError("no images to bootstrap")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, (1 << 22) // n))
    stats = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
        stats.append(counts @ values / n)
    stats = 100.0 * np.concatenate(stats)
    alpha = (1.0 - level) / 2.0
    ci = np.stack([np.quantile(stats, alpha, axis=0), np.quantile(stats, 1.0 - alpha, axis=0)], axis=-1)
    return ci[0] if squeeze else ci


def per_class_error(
    correct: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Error (%) per class (NaN without images) per column of ``correct``, and the images per class."""
    counts = np.bincount(labels, minlength=num_classes)
    flat = np.asarray(correct, dtype=np.float64).reshape(len(labels), -1)
    hits = np.stack(
        [np.bincount(labels, weights=flat[:, r], minlength=num_classes) for r in range(flat.shape[1])], 1
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        err = 100.0 * (1.0 - hits / counts[:, None])
    return (err[:, 0] if correct.ndim == 1 else err), counts
