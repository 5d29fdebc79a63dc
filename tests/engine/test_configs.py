"""The experiment configs say what the paper's variant table says (training.md), for every dataset."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from bn_inception.config import OptimConfig, effective_lr, effective_weight_decay, register_configs

register_configs()

# The paper's table (Sec. 4.2.2 / 4.2.1): norm, act, lr, dropout, weight decay (x w), decay speed-up,
# LRN, shuffling, distortions.
PAPER = {
    "inception": ("none", "relu", 0.0015, 0.4, 1.0, 1, True, "shard", "full"),
    "bn_baseline": ("batch", "relu", 0.0015, 0.4, 1.0, 1, True, "shard", "full"),
    "bn_x5": ("batch", "relu", 0.0075, 0.0, 0.2, 6, False, "global", "reduced"),
    "bn_x30": ("batch", "relu", 0.045, 0.0, 0.2, 6, False, "global", "reduced"),
    "bn_x5_sigmoid": ("batch", "sigmoid", 0.0075, 0.0, 0.2, 6, False, "global", "reduced"),
    # the Sec. 4.2.2 text's two non-BN controls: Inception with sigmoid, and with 5x the learning rate
    "inception_sigmoid": ("none", "sigmoid", 0.0015, 0.4, 1.0, 1, True, "shard", "full"),
    "inception_x5": ("none", "relu", 0.0075, 0.4, 1.0, 1, True, "shard", "full"),
}


def _compose(repo, overrides):
    with initialize_config_dir(config_dir=str(repo / "bn_inception" / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=False)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("data", ["fashion_mnist", "imagenet"])
@pytest.mark.parametrize("variant", list(PAPER))
def test_variant_matches_the_paper(repo, variant, data):
    cfg = _compose(repo, [f"experiment={variant}", f"data={data}"])
    norm, act, lr, drop, wd_factor, speedup, lrn, shuffle, distortion = PAPER[variant]
    assert cfg["name"] == variant
    assert cfg["model"]["norm"] == norm and cfg["model"]["act"] == act
    assert effective_lr(OptimConfig(**cfg["optim"])) == pytest.approx(lr)
    assert cfg["model"]["drop_rate"] == pytest.approx(drop)
    base = cfg["optim"]["base_weight_decay"]
    assert effective_weight_decay(OptimConfig(**cfg["optim"])) == pytest.approx(base * wd_factor)
    assert cfg["schedule"]["speedup"] == speedup
    assert cfg["model"]["lrn"] is lrn
    assert cfg["data"]["shuffle"] == shuffle and cfg["data"]["distortion"] == distortion
    assert cfg["trainer"]["batch_size"] == 32 and cfg["optim"]["momentum"] == pytest.approx(0.9)


def test_default_run_is_bn_x5_on_fashion_mnist(repo):
    cfg = _compose(repo, [])
    assert cfg["name"] == "bn_x5" and cfg["data"]["name"] == "fashion_mnist"


def test_lr_override_wins_over_the_multiplier(repo):
    assert (
        effective_lr(OptimConfig(**_compose(repo, ["experiment=bn_x30", "optim.lr=0.01"])["optim"])) == 0.01
    )
    slower = _compose(repo, ["experiment=bn_x30", "optim.base_lr=0.001"])
    assert effective_lr(OptimConfig(**slower["optim"])) == pytest.approx(0.03)


@pytest.mark.parametrize("member", [f"ensemble_m{i}" for i in range(1, 7)])
def test_ensemble_members_are_bn_x30_with_the_sec_423_changes(repo, member):
    cfg = _compose(repo, [f"experiment={member}"])
    assert (
        effective_lr(OptimConfig(**cfg["optim"])) == pytest.approx(0.045) and cfg["model"]["norm"] == "batch"
    )
    assert cfg["model"]["drop_rate"] in (0.05, 0.10)
    assert cfg["model"]["init_scale"] > 1.0 or cfg["model"]["last_bn"] or cfg["model"]["drop_rate"] > 0


def test_mnist_figure1_is_the_sec_41_setup(repo):
    cfg = _compose(repo, ["experiment=mnist_figure1"])
    assert cfg["model"] == {"name": "bn_mlp", "norm": "none"}
    assert cfg["trainer"]["batch_size"] == 60 and cfg["trainer"]["max_steps"] == 50_000
    assert cfg["name"] == "mnist_figure1_none" and cfg["data"]["augment"] is False
    assert _compose(repo, ["experiment=mnist_figure1", "model.norm=batch"])["name"] == "mnist_figure1_batch"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_step=10"], "max_step"),
        (["experiment=bn_x50"], "bn_x50"),
        (["data=imagenet21k"], "imagenet21k"),
    ],
)
def test_typos_fail_at_compose_time(repo, overrides, message):
    with pytest.raises(ConfigCompositionException, match=message):
        _compose(repo, overrides)


@pytest.mark.parametrize(
    "launcher, target", [("local_parallel", "JoblibLauncher"), ("slurm", "SlurmLauncher")]
)
def test_shipped_launchers_compose(repo, launcher, target):
    with initialize_config_dir(config_dir=str(repo / "bn_inception" / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":  # one process per GPU, and requeue only because runs auto-resume
        assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node
        assert cfg.hydra.launcher.max_num_timeout > 0 and cfg.resume == "auto"
        assert cfg.hydra.launcher.signal_delay_s >= 60  # SIGUSR2 early enough to save before the limit
