"""The one schema (bn_inception/config.py) and the pre-flight check (bn_inception/cli.py): every bad value
ends the command with one line naming the key, the value and what is valid, before anything is created."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bn_inception import cli
from bn_inception.config import ConfigError, TrainConfig, index_range_of, register_configs, validate

register_configs()


def refusal(capsys, *argv: str, app: str = "train") -> str:
    """Run the pre-flight check on a command line; the one line it prints (it must exit with status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.preflight(app, list(argv))
    assert exit_info.value.code == cli.EXIT_CONFIG
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("trainer.target_top1=72.2%", "72.2% is not valid; it must be a number (or null); give a percentage "
         "as a plain number, without '%'"),
        ("trainer.eval_every=0", "0 is not valid; it must be > 0"),
        ("trainer.eval_every=-5", "-5 is not valid; it must be > 0"),
        ("trainer.log_every=0", "0 is not valid; it must be > 0"),
        ("trainer.max_steps=0", "0 is not valid; it must be > 0"),
        ("trainer.batch_size=abc", "abc is not valid; it must be an integer"),
        ("optim.momentum=abc", "abc is not valid; it must be a number"),
        ("optim.momentum=1.5", "1.5 is not valid; it must be >= 0.0 and < 1.0"),
        ("schedule.decay_rate=0", "0.0 is not valid; it must be > 0.0 and <= 1.0"),
        ("trainer.deterministic=maybe", "maybe is not valid; it must be true or false"),
        ("seed=/../../..", "/../../.. is not valid; it must be an integer"),
        ("model.norm=layer", "layer is not valid; use one of: batch, paper, ghost, none"),
        ("trainer.channels_last=yes", "yes is not valid; use one of: auto, true, false"),
        ("data.crop_scale=[0.5,0.1]", "[0.5,0.1] is not valid; give [low, high] with 0 < low <= high"),
        ("name=../escape", "../escape is not valid; use letters, digits, '_', '.' and '-' only"),
        ("experiment=bn_x50", "bn_x50 is not valid; use one of: bn_baseline, bn_x30, bn_x5,"),
        ("data=imagenet21k", "imagenet21k is not valid; use one of: fashion_mnist, imagenet,"),
    ],
)  # fmt: skip
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_valid(capsys, override, expected):
    key = override.split("=")[0]
    assert refusal(capsys, override).startswith(f"error: {key}={expected}")


def test_an_unknown_key_suggests_the_closest(capsys):
    line = refusal(capsys, "trainer.max_step=10")
    assert line.startswith("error: trainer.max_step is not a config key (did you mean trainer.max_steps?)")


def test_an_experiment_setting_a_key_the_chosen_model_lacks_is_one_line(capsys):
    line = refusal(
        capsys, "model=bn_mlp"
    )  # the default experiment (bn_x5) sets model.lrn, which the MLP lacks
    assert line.startswith("error: model.lrn, set by experiment/inception, is not a key of the chosen model")


def test_every_job_of_a_sweep_is_checked_before_any_runs(capsys):
    line = refusal(capsys, "-m", "seed=0,1", "trainer.eval_every=100,0")
    assert "trainer.eval_every=0 is not valid" in line


def test_an_experiments_own_sweep_is_checked_too(capsys):
    # mnist_figure1 sweeps model.norm itself (hydra.sweeper.params); a bad value on top is still caught
    line = refusal(capsys, "-m", "experiment=mnist_figure1", "optim.base_lr=-1")
    assert "optim.base_lr=-1.0 is not valid" in line


def test_a_sweep_directory_cannot_leave_the_sweep_root(capsys):
    # values become one directory name, whatever they contain
    subdir = cli.run_subdir("bn_x5", 0, ["data.classes=../../../../escape", "seed=0"], ["seed"])
    assert subdir == "bn_x5/data.classes:.._.._.._.._escape/seed0"
    line = refusal(capsys, "-m", "seed=0,1", "hydra.sweep.subdir=../../outside")
    assert "must keep it inside hydra.sweep.dir" in line


def test_an_unwritable_run_directory_is_refused_before_hydra_makes_it(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = refusal(capsys, f"hydra.run.dir={blocker}/run")
    assert str(blocker) in line and "not a folder" in line
    # an unset variable in a job script (hydra.run.dir=$RUN_DIR) would train into the current folder
    assert "hydra.run.dir is empty" in refusal(capsys, "hydra.run.dir=")
    assert "hydra.sweep.dir is empty" in refusal(capsys, "-m", "seed=0,1", "hydra.sweep.dir=")


def test_evaluate_data_keys_go_on_top_of_the_checkpoints_with_a_plus(capsys):
    line = refusal(capsys, "checkpoints=x.pt", "data.workers=0", app="evaluate")  # said: did you mean itself
    assert line.endswith(
        "data.workers is not set here; add it to the checkpoint's data config with +data.workers=<value>"
    )
    cli.preflight("evaluate", ["checkpoints=x.pt", "+data.workers=0"])


def test_a_slurm_warning_that_could_come_as_the_job_starts_is_refused(capsys):
    """SLURM sends the warning up to 60 s early: with 60 s + signal_delay_s >= the time limit a job could be
    warned, saved and requeued before its first step, forever (issue 20)."""
    line = refusal(capsys, "-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=2",
                   "hydra.launcher.signal_delay_s=60")  # fmt: skip
    assert "signal_delay_s=60 is not valid with timeout_min=2" in line and "signal_delay_s < 60" in line
    cli.preflight("train", ["-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=2",
                            "hydra.launcher.signal_delay_s=45"])  # fmt: skip


def test_the_continue_line_inside_a_slurm_job_is_a_slurm_command(tmp_path):
    """Printed by an interrupted run: locally the run again; inside a SLURM job never a local command (it
    would train on the login node): the sweep (this one job) submitted again, or the job requeued."""
    task, hydra = ["seed=1", "trainer.max_steps=9"], ["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                                      "hydra.sweep.dir=s", "hydra.mode=MULTIRUN"]  # fmt: skip
    run = tmp_path / "run dir"
    local = cli.continue_command(task, hydra, run, None, env={})
    assert local == f"python train.py seed=1 trainer.max_steps=9 'hydra.run.dir={run}'"
    sweep_job = cli.continue_command(task, hydra, run, "sweeps/x", env={"SLURM_JOB_ID": "12"})
    assert sweep_job.startswith("python train.py -m hydra/launcher=slurm hydra.launcher.partition=gpu seed=1 "
                                "trainer.max_steps=9 hydra.sweep.dir=sweeps/x  (")  # fmt: skip
    assert cli.continue_command(task, [], run, None, env={"SLURM_JOB_ID": "12"}).startswith(
        "scontrol requeue 12"
    )


def test_evaluate_options_are_checked_the_same_way(capsys):
    assert "crops=5 is not valid; use one of: 1, 10, 144" in refusal(capsys, "checkpoints=x.pt", "crops=5",
                                                                      app="evaluate")  # fmt: skip
    assert "bootstrap=-1 is not valid" in refusal(capsys, "checkpoints=x.pt", "bootstrap=-1", app="evaluate")
    for bad in ("0", "10:5", "a:b", "-3", "1:2:3"):
        assert f"images={bad} is not valid; use N > 0 (the first N), A:B with A < B" in refusal(
            capsys, "checkpoints=x.pt", f"images={bad}", app="evaluate"
        )


def test_an_index_range_selects_as_a_python_slice():
    assert index_range_of(None, 10) == range(10) and index_range_of(3, 10) == range(3)
    assert index_range_of("5000:10000", 10000) == range(5000, 10000)
    assert index_range_of("4:", 10) == range(4, 10) and index_range_of(":4", 10) == range(4)
    assert index_range_of("8:20", 10) == range(8, 10)
    with pytest.raises(ValueError, match="selects no image of the 10"):
        index_range_of("10:20", 10)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("+trainer.foo=1", "trainer.foo is not a config key;"),
        ("+optim.momentun=0.5", "optim.momentun is not a config key (did you mean optim.momentum?)"),
        ("+max_steps=12", "max_steps is not a config key (did you mean trainer.max_steps?)"),
        ("~optim", "optim is missing (removed with ~optim?)"),
        ("~trainer", "trainer is missing (removed with ~trainer?)"),
        ("~seed", "seed is missing (removed with ~seed?)"),
        ("~trainer.eval_limit", "~trainer.eval_limit is not valid: a key of the schema cannot be removed"),
        ("~trainer.max_steps", "~trainer.max_steps is not valid: a key of the schema cannot be removed"),
        ("~experiment", "name is not set"),
        ("model.norm=BATCH", "model.norm=BATCH is not valid; use one of: batch, paper, ghost, none"),
        ("trainer.amp=BF16", "trainer.amp=BF16 is not valid; use one of: auto, bf16, fp16, none"),
        ("+seed=3", "Either remove + prefix: 'seed=3'"),  # all of Hydra's advice, on one line
    ],
)  # fmt: skip
def test_every_override_form_hydra_accepts_is_checked_before_anything_is_made(capsys, tmp_path, override,
                                                                                expected):  # fmt: skip
    run_dir = tmp_path / "run"
    assert expected in refusal(capsys, override, f"hydra.run.dir={run_dir}")
    assert not run_dir.exists()


def test_hydra_sweep_functions_pass_as_hydra_expands_them():
    jobs = cli.compose_jobs("train", ["experiment=glob(bn_x*)", "seed=range(0,2)"], True, cli.CONFIG_DIR)
    names = sorted((job.name, job.seed) for job in jobs)
    assert names == [(n, s) for n in ("bn_x30", "bn_x5", "bn_x5_sigmoid") for s in (0, 1)]


def test_yaml_booleans_still_spell_a_switch(capsys, tmp_path):
    cli.preflight(
        "train", ["trainer.channels_last=true", "trainer.compile=False", f"hydra.run.dir={tmp_path}"]
    )
    assert capsys.readouterr().err == ""


def test_good_command_lines_pass(capsys, tmp_path):
    cli.preflight("train", ["experiment=bn_x30", "data=imagenet", f"hydra.run.dir={tmp_path}/run"])
    cli.preflight("train", ["-m", "experiment=inception,bn_x5", "seed=0,1"])
    cli.preflight("evaluate", ["checkpoints=[a.pt,b.pt]", "crops=144", "data=imagenet"])
    cli.preflight("evaluate", ["checkpoints=a.pt", "images=5000:10000"])
    cli.preflight("evaluate", ["checkpoints=a.pt", "images=1000"])
    assert capsys.readouterr().err == ""


def test_the_check_answers_without_importing_torch(repo):
    code = (
        "import sys; from bn_inception import cli\n"
        "try:\n    cli.preflight('train', ['trainer.eval_every=0'])\n"
        "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False"], out.stderr


def test_library_callers_get_the_same_validation(repo):
    with initialize_config_dir(config_dir=str(repo / "bn_inception" / "configs"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="train"), resolve=True)
    validate(cfg, TrainConfig)
    cfg["trainer"]["eval_every"] = 0
    with pytest.raises(ConfigError, match=r"^trainer.eval_every=0 is not valid; it must be > 0$"):
        validate(cfg, TrainConfig)


@pytest.mark.parametrize(
    "value",
    [
        "runs/bn_x5/seed0/checkpoints/best.pt",
        "sweeps/x/inception/data=fashion_mnist/seed0/checkpoints/best.pt",
        "sweeps/y/bn_x5/data.crop_scale=[0.1,1.0],seed=0/best.pt",
        "with space/it's \"quoted\"/a.pt",
    ],
)  # fmt: skip
def test_printed_overrides_read_back_as_the_same_value_through_shell_and_hydra(repo, value):
    word = cli.override("resume", value)
    argv = subprocess.run(["bash", "-c", f"printf '%s\\n' {word}"], capture_output=True, text=True).stdout
    assert argv.count("\n") == 1  # one shell word
    with initialize_config_dir(config_dir=str(repo / "bn_inception" / "configs"), version_base="1.3"):
        assert compose(config_name="train", overrides=[argv.rstrip("\n")]).resume == value


def test_every_key_is_declared_once_with_a_comment(repo):
    """The schema is the one place a key is declared: a comment above each field gives its meaning."""
    import ast

    source = (repo / "bn_inception" / "config.py").read_text()
    lines = source.splitlines()
    classes = {n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)}
    fields = 0
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and ast.unparse(item.annotation) not in classes:
                fields += 1
                above = lines[item.lineno - 2].strip()
                assert above.startswith("#"), f"{node.name}.{ast.unparse(item.target)} has no comment"
    assert fields > 90


def test_every_printable_character_survives_a_printed_override():
    import shlex
    import string

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    values = [f"runs/a{c}b/best.pt" for c in string.printable.strip()]
    values += ['a\\"b', "a\\", 'a\\\\"', "x\\\\y", 'it\'s "q" \\']  # backslashes next to quotes, at the end
    for value in values:
        (word,) = shlex.split(cli.override("checkpoints", value))  # what the shell hands over
        assert parser.parse_override(word).value() == value, repr(value)


def _run(repo, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=repo, capture_output=True, text=True, timeout=120)


def test_help_and_config_answer_without_torch_and_show_no_interpolations(repo):
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('TORCH', 'torch' in sys.modules))\n"
        "sys.argv = [sys.argv[1], *sys.argv[2:]]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    helped = _run(repo, "-c", code, "train.py", "--help")
    assert (
        "TORCH False" in helped.stdout
        and "bn_x5_sigmoid" in helped.stdout
        and "imagenet_subset" in helped.stdout
    )
    assert "75" in helped.stdout  # the exit codes are listed
    shown = _run(repo, "-c", code, "train.py", "experiment=bn_x30", "--cfg", "job")
    assert "TORCH False" in shown.stdout and "lr_mult: 30" in shown.stdout and "${" not in shown.stdout
    evaluated = _run(repo, "-c", code, "evaluate.py", "--help")
    assert "TORCH False" in evaluated.stdout and "schema" not in evaluated.stdout
    assert "fashion_mnist, imagenet, imagenet_subset, synthetic" in evaluated.stdout


def test_help_lists_every_experiment_and_dataset(repo):
    text = (repo / "bn_inception" / "configs" / "hydra" / "help" / "train_help.yaml").read_text()
    for kind in ("experiment", "data"):
        for path in (repo / "bn_inception" / "configs" / kind).glob("*.yaml"):
            listed = path.stem in text or (
                path.stem.startswith("ensemble_m") and "ensemble_m1 .. ensemble_m6" in text
            )
            assert listed, f"{kind}={path.stem} is missing from train.py --help"


def test_the_package_declares_its_dependencies_and_commands(repo):
    """pyproject's ranges accept every pin of the tested lock (requirements.txt), and the commands exist
    (tests/test_packaging.py installs and runs them)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    ranges = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        ranges.update({Requirement(r).name: Requirement(r) for r in extra})
    lines = (repo / "requirements.txt").read_text().splitlines()
    pins = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    assert pins and {pin.name for pin in pins} <= set(ranges)  # every pinned package is declared
    for pin in pins:
        (version,) = [spec.version for spec in pin.specifier]
        assert ranges[pin.name].specifier.contains(version), (pin, ranges[pin.name])
    for target in project["scripts"].values():
        module, _, function = target.partition(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
