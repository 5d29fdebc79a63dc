"""Ensemble arithmetic (Sec. 4.2.3), top-k errors and bootstrap intervals."""

import math

import numpy as np
import pytest
import torch

from bn_inception.evaluation.ensemble import (
    bootstrap_mean_ci,
    crop_averaged_probs,
    ensemble_probs,
    error_percent,
    per_class_error,
    topk_correct,
)


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def bootstrap_error_ci(correct: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    return bootstrap_mean_ci(1.0 - correct, n_resamples, seed)  # as the table's rows


def test_crop_average_then_member_mean_matches_a_hand_computation():
    # Two members, two images, two crops each, three classes; an image's crops are adjacent.
    a = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    b = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [5.0, 0.0, 0.0]])
    pa, pb = crop_averaged_probs(a, 2), crop_averaged_probs(b, 2)

    def by_hand(logits, image):
        c0, c1 = softmax(logits[2 * image].tolist()), softmax(logits[2 * image + 1].tolist())
        return [(x + y) / 2 for x, y in zip(c0, c1, strict=True)]

    for image in range(2):
        ha, hb = by_hand(a, image), by_hand(b, image)
        assert pa[image].tolist() == pytest.approx(ha, abs=1e-6)
        expected = [(x + y) / 2 for x, y in zip(ha, hb, strict=True)]
        assert ensemble_probs([pa, pb])[image].tolist() == pytest.approx(expected, abs=1e-6)
    # Image 0: by hand the ensemble's most probable class is 1 (member a says 0 or 1, b says 1).
    assert ensemble_probs([pa, pb])[0].argmax().item() == 1


def test_ensemble_of_one_model_twice_is_the_model():
    p = crop_averaged_probs(torch.randn(40, 7), 4)
    assert torch.allclose(ensemble_probs([p, p]), p)


def test_ensemble_is_the_mean_of_probabilities_not_logits():
    # Mean of logits would pick class 0 (mean logit 5 vs 4.5); mean of probabilities picks class 1.
    a = torch.tensor([[10.0, 9.0]])
    b = torch.tensor([[0.0, 0.0]])
    logit_mean = (a + b) / 2
    assert logit_mean.argmax().item() == 0
    p = ensemble_probs([crop_averaged_probs(a, 1), crop_averaged_probs(b, 1)])
    assert p.tolist()[0] == pytest.approx([(softmax([10, 9])[0] + 0.5) / 2, (softmax([10, 9])[1] + 0.5) / 2])


def test_topk_correct_and_top5_error_never_above_top1():
    g = torch.Generator().manual_seed(0)
    for classes in (3, 10, 100):
        probs = torch.rand(500, classes, generator=g).softmax(-1)
        labels = torch.randint(0, classes, (500,), generator=g)
        correct = topk_correct(probs, labels).numpy()
        top1_err, top5_err = error_percent(correct)
        assert top5_err <= top1_err
        assert (correct[:, 1] >= correct[:, 0]).all()  # every top-1 hit is a top-5 hit
        assert correct[:, 0].tolist() == (probs.argmax(-1) == labels).tolist()
    assert error_percent(topk_correct(torch.eye(3), torch.tensor([0, 1, 2])).numpy()).tolist() == [0.0, 0.0]
    # Label ranked 3rd: a top-1 miss, a top-5 hit.
    assert topk_correct(torch.tensor([[0.5, 0.3, 0.2, 0.0, 0.0, 0.0]]), torch.tensor([2])).tolist() == [
        [False, True]
    ]


def test_bootstrap_ci_contains_the_estimate_is_deterministic_and_has_the_binomial_width():
    rng = np.random.default_rng(1)
    correct = rng.random((4000, 2)) < [0.7, 0.9]  # two columns: ~30% and ~10% error
    point = error_percent(correct)
    ci = bootstrap_error_ci(correct, n_resamples=500, seed=0)
    assert ci.shape == (2, 2)
    assert ((ci[:, 0] <= point) & (point <= ci[:, 1])).all()
    assert np.array_equal(ci, bootstrap_error_ci(correct, n_resamples=500, seed=0))
    assert not np.array_equal(ci, bootstrap_error_ci(correct, n_resamples=500, seed=1))
    # The width matches the normal approximation 2 * 1.96 * sqrt(p (1 - p) / n) to within 15%.
    p = point / 100
    expected = 100 * 2 * 1.96 * np.sqrt(p * (1 - p) / len(correct))
    assert np.allclose(ci[:, 1] - ci[:, 0], expected, rtol=0.15)
    # A column's interval does not depend on which other columns are resampled with it.
    assert np.array_equal(bootstrap_error_ci(correct[:, 1], n_resamples=500, seed=0), ci[1])


def test_bootstrap_ci_of_a_perfect_model_is_zero():
    assert bootstrap_error_ci(np.ones(50, dtype=bool), n_resamples=100).tolist() == [0.0, 0.0]


def test_per_class_error_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 2])
    correct = np.array([True, False, True, True, False, True])
    err, counts = per_class_error(correct, labels, num_classes=4)
    assert counts.tolist() == [2, 3, 1, 0]
    assert err[:3].tolist() == pytest.approx([50.0, 100 / 3, 0.0])
    assert np.isnan(err[3])


def _hits(wrong_top1: int, n: int = 200) -> np.ndarray:
    """[n, 2] correctness: wrong (top-1 and top-5) on the first `wrong_top1` images."""
    c = np.ones((n, 2), dtype=bool)
    c[:wrong_top1] = False
    return c


def test_ensemble_gain_is_over_the_best_member_with_a_paired_interval():
    from pathlib import Path

    from bn_inception.evaluation.checkpoints import Member
    from bn_inception.evaluation.evaluator import Predictions
    from bn_inception.evaluation.table import ensemble_gains

    members = [Member(name, Path(f"{name}.pt"), None, 8, (0.5,), (0.5,), 1, ("a", "b")) for name in "xy"]
    # x wrong on 40 images, y on 20 (the best), the ensemble on 10 of the same: 5 points better than y.
    preds = Predictions(np.zeros(200, int), {"x": _hits(40), "y": _hits(20), "ensemble": _hits(10)}, 1.0)
    (gain,) = ensemble_gains(members, {"ensemble": [0, 1]}, preds, bootstrap=500, seed=0)
    assert (gain.best_member, gain.top1_gain, gain.top5_gain) == ("y", 5.0, 5.0)
    low, high = gain.top1_gain_ci
    assert 0.0 < low < 5.0 < high
    # Unpaired, the two errors' own intervals overlap; the paired one excludes 0.
    own = bootstrap_error_ci(np.stack([preds.correct["y"][:, 0], preds.correct["ensemble"][:, 0]], 1), 500)
    assert own[0, 0] < own[1, 1]

    same = Predictions(np.zeros(200, int), {"x": _hits(40), "y": _hits(20), "ensemble": _hits(20)}, 1.0)
    (none,) = ensemble_gains(members, {"ensemble": [0, 1]}, same, bootstrap=100)
    assert (none.top1_gain, none.top1_gain_ci) == (0.0, (0.0, 0.0))
