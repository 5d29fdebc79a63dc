"""The paper's published numbers (Ioffe & Szegedy 2015), as data, copied from the paper.

Reports put these next to ours; nothing here is computed from our runs. Units follow the paper: steps in
units of 10^6 mini-batches of 32 images, accuracies and errors in percent.
"""

from __future__ import annotations

from dataclasses import dataclass

# Sec. 4.2.2: the five ImageNet networks, in the paper's order, under our names (docs/design.md).
VARIANTS: tuple[str, ...] = ("inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid")
NETWORK_NAMES: dict[str, str] = {
    "inception": "Inception",
    "bn_baseline": "BN-Baseline",
    "bn_x5": "BN-x5",
    "bn_x30": "BN-x30",
    "bn_x5_sigmoid": "BN-x5-Sigmoid",
}


@dataclass(frozen=True)
class Figure3Row:
    """One row of Figure 3's table: steps to reach Inception's best (72.2%) and the network's best."""

    variant: str
    network: str
    steps_to_target_e6: float | None  # units of 10^6 steps; None: never reached 72.2%
    max_top1: float  # percent, single crop, ILSVRC-2012 validation


# Figure 3 (Sec. 4.2.2). The target is Inception's own best, 72.2%.
FIGURE3_TARGET_TOP1 = 72.2
FIGURE3: tuple[Figure3Row, ...] = (
    Figure3Row("inception", "Inception", 31.0, 72.2),
    Figure3Row("bn_baseline", "BN-Baseline", 13.3, 72.7),
    Figure3Row("bn_x5", "BN-x5", 2.1, 73.0),
    Figure3Row("bn_x30", "BN-x30", 2.7, 74.8),
    Figure3Row("bn_x5_sigmoid", "BN-x5-Sigmoid", None, 69.8),
)
FIGURE3_BY_VARIANT: dict[str, Figure3Row] = {row.variant: row for row in FIGURE3}

# Sec. 4.2.2 text: "BN-x30 ... reaches the higher accuracy of 74.8% after 6e6 steps".
BN_X30_STEPS_TO_BEST_E6 = 6.0
# Sec. 4.2.2 text: Inception trained with sigmoid (no BN) "never achieves better than 1/1000 accuracy".
INCEPTION_SIGMOID_CHANCE_TOP1 = 100.0 / 1000


def figure3_speedup(variant: str) -> float | None:
    """The paper's speed-up: Inception's steps to 72.2% over the variant's; None where never reached."""
    row = FIGURE3_BY_VARIANT[variant]
    if row.steps_to_target_e6 is None:
        return None
    return FIGURE3_BY_VARIANT["inception"].steps_to_target_e6 / row.steps_to_target_e6


@dataclass(frozen=True)
class Figure4Row:
    """One row of Figure 4's table (Sec. 4.2.3): ensembles and multi-crop inference on ILSVRC-2012 val."""

    model: str
    resolution: int | str  # input side in pixels, or "variable"
    crops: int | None  # None: "-" in the paper
    models: int | None  # None: "-" in the paper
    top1_err: float | None  # percent; None: not reported
    top5_err: float  # percent


FIGURE4: tuple[Figure4Row, ...] = (
    Figure4Row("GoogLeNet ensemble", 224, 144, 7, None, 6.67),
    Figure4Row("Deep Image low-res", 256, None, 1, None, 7.96),
    Figure4Row("Deep Image high-res", 512, None, 1, 24.88, 7.42),
    Figure4Row("Deep Image ensemble", "variable", None, None, None, 5.98),
    Figure4Row("BN-Inception single crop", 224, 1, 1, 25.2, 7.82),
    Figure4Row("BN-Inception multicrop", 224, 144, 1, 21.99, 5.82),
    Figure4Row("BN-Inception ensemble", 224, 144, 6, 20.1, 4.9),
)
# Sec. 4.2.3: the ensemble's top-5 error on the ILSVRC test server (100,000 images).
ENSEMBLE_TEST_SERVER_TOP5_ERR = 4.82
# Sec. 4.2.3: each ensemble member "reached its best accuracy after about 6e6 steps".
ENSEMBLE_MEMBER_STEPS_TO_BEST_E6 = 6.0
ENSEMBLE_MEMBERS = 6

# Sec. 4.1 / Figure 1: the MNIST experiment.
MNIST_STEPS = 50_000
MNIST_BATCH_SIZE = 60
MNIST_HIDDEN_LAYERS = 3
MNIST_HIDDEN_UNITS = 100


@dataclass(frozen=True)
class Claim:
    """A claim from the paper's text, with the paper's number for it as a formatted string."""

    key: str
    text: str
    paper: str


# One line per claim of Sec. 4.1 and 4.2.2; report.py computes "ours" for each key.
CLAIMS: tuple[Claim, ...] = (
    Claim(
        "bn_baseline_half_steps",
        "BN-Baseline matches Inception's accuracy in under half the steps",
        "0.43 of Inception's steps (13.3/31.0), i.e. 2.3x fewer",
    ),
    Claim(
        "bn_x5_14x",
        "BN-x5 needs 14x fewer steps than Inception to reach Inception's best",
        "14.8x (31.0/2.1)",
    ),
    Claim(
        "bn_x30_slower_start",
        "BN-x30 is a bit slower than BN-x5 to reach Inception's best",
        "1.29x BN-x5's steps (2.7/2.1)",
    ),
    Claim(
        "bn_x30_best_5x",
        "BN-x30 reaches its best in 5x fewer steps than Inception needs for its best",
        "5.2x (31.0/6.0); BN-x30 best 74.8% vs Inception 72.2%",
    ),
    Claim(
        "max_accuracy_order",
        "Best accuracies, highest first",
        "BN-x30 74.8 > BN-x5 73.0 > BN-Baseline 72.7 > Inception 72.2 > BN-x5-Sigmoid 69.8",
    ),
    Claim(
        "bn_x5_sigmoid_never",
        "BN-x5-Sigmoid never reaches Inception's best but trains (69.8%)",
        "never; best 69.8%",
    ),
    Claim(
        "inception_sigmoid_chance",
        "Inception with sigmoid and no BN never rises above chance",
        "at most 1/1000 (0.1%) with 1000 classes",
    ),
    Claim(
        "inception_x5_diverges",
        "Inception (no BN) at 5x the learning rate diverges",
        "its parameters reached machine infinity",
    ),
)

MNIST_CLAIMS: tuple[Claim, ...] = (
    Claim(
        "mnist_higher_accuracy",
        "With BN the MLP reaches higher test accuracy",
        "higher (Figure 1a, read off the plot; no number given)",
    ),
    Claim(
        "mnist_faster",
        "With BN the MLP gets to the no-BN network's best accuracy in fewer steps",
        "faster (Figure 1a; no number given)",
    ),
    Claim(
        "mnist_stable_inputs",
        "Without BN the sigmoid input's distribution drifts; with BN it stays stable",
        "drifts vs stable (Figure 1b, c; no number given)",
    ),
)
