"""evaluate.py end to end, as a user runs it, on a tiny synthetic ImageNet tree; and its refusals.

The checkpoints are made here with a tiny model (the Sec. 4.1 MLP at 16 px, with BN) in the documented
checkpoint format (docs/design.md); the data config they record points at the generated tree, so no
``data=`` is needed on the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import bn_inception  # noqa: F401  (registers the models)
from bn_inception.config import EvalConfig
from bn_inception.data import build_datasets, build_eval_loader, make_synthetic_imagenet, to_model_input
from bn_inception.engine.checkpoint import CheckpointError, save_checkpoint
from bn_inception.engine.validate import validate
from bn_inception.evaluation.checkpoints import (
    EvaluationError,
    Member,
    check_members,
    find_checkpoints,
    load_member,
    member_names,
)
from bn_inception.evaluation.crops import make_crops
from bn_inception.evaluation.ensemble import crop_averaged_probs, ensemble_probs, error_percent, topk_correct
from bn_inception.evaluation.evaluator import (
    MultiCropImages,
    evaluate_checkpoints,
    member_probs,
    predict,
    resolve_data_kwargs,
    with_population_stats,
)

REPO = Path(__file__).resolve().parents[2]
INPUT = 16
CLASSES = 8


def make_checkpoint(path: Path, splits, data_cfg: dict, seed: int, prefix: str = "", classes=None) -> Path:
    """A checkpoint in train.py's format: a bn_mlp with BN whose running statistics were updated a little."""
    classes = list(classes or splits.classes)
    torch.manual_seed(seed)
    kwargs = {"num_classes": len(classes), "in_chans": 3, "img_size": INPUT, "norm": "batch"}
    model = timm.create_model("bn_mlp", **kwargs)
    model.train()
    with torch.no_grad():  # a few training-mode passes so the running averages are not the defaults
        for images, _ in build_eval_loader(splits.train, batch_size=16, workers=0):
            model(to_model_input(images, splits.mean, splits.std, "cpu"))
    state = {prefix + k: v for k, v in model.state_dict().items()}  # DDP/compile prefixes must load too
    data = {
        "input_size": INPUT,
        "mean": list(splits.mean),
        "std": list(splits.std),
        "classes": classes,
        "in_chans": 3,
    }
    ckpt = {
        "model": state, "optimizer": {}, "step": 100 + seed, "best_top1": 0.0, "model_name": "bn_mlp",
        "model_kwargs": kwargs, "data": data, "config": {"name": f"m{seed}", "data": data_cfg,
                                                        "trainer": {"batch_size": 8}},
    }  # fmt: skip
    save_checkpoint(ckpt, path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    make_synthetic_imagenet(root / "data", num_classes=CLASSES, train_per_class=4, val_per_class=4,
                            min_size=20, max_size=40)  # fmt: skip
    data_cfg = {"name": "synthetic", "root": str(root / "data"), "input_size": INPUT, "workers": 0}
    splits = build_datasets(**data_cfg, seed=0)
    runs = root / "sweep"
    a = make_checkpoint(runs / "m1" / "seed0" / "checkpoints" / "best.pt", splits, data_cfg, seed=1)
    b = make_checkpoint(
        runs / "m2" / "seed0" / "checkpoints" / "best.pt", splits, data_cfg, seed=2, prefix="module."
    )
    other_classes = [f"n{i:08d}" for i in range(CLASSES)]
    other = make_checkpoint(
        root / "other.pt", splits, data_cfg, seed=3, prefix="_orig_mod.", classes=other_classes
    )
    return {
        "root": root,
        "splits": splits,
        "data_cfg": data_cfg,
        "a": a,
        "b": b,
        "runs": runs,
        "other": other,
    }


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "evaluate.py"), "progress=false", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def reference_rows(world) -> dict[str, tuple[float, float]]:
    """Errors (%) as training-time validation computes them; the ensemble from the same probabilities."""
    splits = world["splits"]
    models = []
    for key in ("a", "b"):
        member = load_member(world[key], key, torch.device("cpu"))
        models.append(member.model)
    out = {}
    for key, model in zip(("m1/seed0", "m2/seed0"), models, strict=True):
        metrics = validate(
            model,
            build_eval_loader(splits.val, batch_size=64, workers=0),
            torch.device("cpu"),
            mean=splits.mean,
            std=splits.std,
        )
        out[key] = (100 - metrics["top1"], 100 - metrics["top5"])
    images, labels = next(iter(build_eval_loader(splits.val, batch_size=1000, workers=0)))
    images = to_model_input(images, splits.mean, splits.std, "cpu")
    with torch.no_grad():
        probs = [crop_averaged_probs(m(images), 1) for m in models]
    out["ensemble"] = tuple(error_percent(topk_correct(ensemble_probs(probs), labels).numpy()))
    return out


@pytest.fixture(scope="module")
def single_crop_run(world):
    out = world["root"] / "eval" / "table.json"
    proc = run_cli(f"checkpoints={world['runs']}", f"output={out}", f"tb_dir={world['root'] / 'tb'}",
                   "per_class=true", "population_stats=2", "bootstrap=200")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text()), out


def test_single_crop_table_matches_training_time_validation(world, single_crop_run):
    proc, table, _ = single_crop_run
    rows = {r["name"]: r for r in table["rows"]}
    assert list(rows) == [
        "m1/seed0",
        "m2/seed0",
        "ensemble",
        "m1/seed0 [pop]",
        "m2/seed0 [pop]",
        "ensemble [pop]",
    ]
    for name, (top1_err, top5_err) in reference_rows(world).items():
        assert rows[name]["top1_err"] == pytest.approx(top1_err, abs=1e-9), name
        assert rows[name]["top5_err"] == pytest.approx(top5_err, abs=1e-9), name
    for r in table["rows"]:
        assert r["crops"] == 1 and r["resolution"] == INPUT and r["images"] == CLASSES * 4
        assert r["top5_err"] <= r["top1_err"]
        for metric in ("top1_err", "top5_err"):
            lo, hi = r[f"{metric}_ci"]
            assert lo <= r[metric] <= hi
        assert len(r["per_class"]) == CLASSES and sum(c["images"] for c in r["per_class"]) == r["images"]
    assert rows["ensemble"]["models"] == 2 and rows["m1/seed0"]["models"] == 1
    assert rows["m2/seed0"]["steps"] == [102] and rows["m1/seed0 [pop]"]["bn_stats"] == "recomputed"
    assert table["bootstrap"]["resamples"] == 200 and table["data"]["name"] == "synthetic"
    # The console shows the same table, and each ensemble's gain over its best member.
    assert "ensemble [pop]" in proc.stdout and f"{rows['ensemble']['top1_err']:.2f}" in proc.stdout
    gain = {g["ensemble"]: g for g in table["ensemble_gains"]}["ensemble"]
    best = min(("m1/seed0", "m2/seed0"), key=lambda name: rows[name]["top1_err"])
    assert gain["best_member"] == best
    assert gain["top1_gain"] == pytest.approx(rows[best]["top1_err"] - rows["ensemble"]["top1_err"], abs=1e-6)
    assert f"ensemble vs its best member ({best}): top-1 error {gain['top1_gain']:+.2f}" in proc.stdout


def test_markdown_and_tensorboard_outputs(world, single_crop_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, table, out = single_crop_run
    markdown = out.with_suffix(".md").read_text()
    assert markdown.startswith("| model | resolution | crops | models | top-1 error (%) | top-5 error (%) |")
    assert "| ensemble | 16 | 1 | 2 |" in markdown and "Per-class top-1 error" in markdown
    assert "| BN-Inception ensemble | 224 | 144 | 6 | 20.1 | 4.9 |" in markdown  # the paper's rows below
    acc = EventAccumulator(str(world["root"] / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert "eval/top1_err/ensemble" in acc.Tags()["scalars"]
    ens = next(r for r in table["rows"] if r["name"] == "ensemble")
    assert acc.Scalars("eval/top1_err/ensemble")[0].value == pytest.approx(ens["top1_err"])


def test_144_crops_of_a_glob_on_a_range_of_images(world):
    out = world["root"] / "eval144.json"
    glob = str(world["runs"] / "*" / "seed0" / "checkpoints" / "best.pt")
    proc = run_cli(f"checkpoints='{glob}'", "crops=144", "images=3:8", "per_image=true", f"output={out}",
                   "bootstrap=0")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["m1/seed0", "m2/seed0", "ensemble"]
    assert all(r["crops"] == 144 and r["images"] == 5 for r in rows)
    assert rows[0]["top1_err_ci"] == [None, None]  # bootstrap=0: no intervals
    table = json.loads(out.read_text())
    assert table["image_range"] == [3, 8] and len(table["per_image"]["labels"]) == 5
    for r in rows:  # the per-image hits give the table's errors
        hits = table["per_image"]["top1"][r["name"]]
        assert len(hits) == 5 and r["top1_err"] == pytest.approx(100 * hits.count("0") / 5)


def test_an_image_range_evaluates_those_images(world):
    # Images 4..11 alone give the same per-image results as the same slice of a pass over all of them.
    whole = evaluate_checkpoints(str(world["a"]), EvalConfig(progress=False, bootstrap=0))
    part = evaluate_checkpoints(str(world["a"]), EvalConfig(progress=False, bootstrap=0, images="4:12"))
    assert part.meta["image_range"] == [4, 12] and part.meta["data"]["images"] == 8
    n = whole.meta["data"]["images"]
    with pytest.raises(EvaluationError, match=f"images={n}: selects no image of the {n}"):
        evaluate_checkpoints(str(world["a"]), EvalConfig(progress=False, images=f"{n}:"))


def test_coinciding_crops_are_evaluated_once_with_the_protocols_weights(world):
    # A square image's 144 crops: 48 distinct. Their weighted average is the average of all 144.
    member = load_member(world["a"], "a", torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8, generator=g) for _ in range(3)]
    views = torch.stack([make_crops(im, 144, INPUT) for im in images])  # [3, 144, C, S, S]
    calls = []
    member.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    probs = member_probs([member], {INPUT: views}, torch.device("cpu"), None, False, 1000)[0]
    assert calls == [3 * 48]
    with torch.no_grad():
        logits = member.model(to_model_input(views.flatten(0, 1), member.mean, member.std, "cpu"))
    assert torch.allclose(probs, crop_averaged_probs(logits, 144), atol=1e-6)


def test_malicious_checkpoint_is_refused_and_its_payload_never_runs(world, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload(), "model_name": "bn_mlp"}, evil)
    proc = run_cli(f"checkpoints=[{world['a']},{evil}]")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert (
        proc.stderr.startswith("error: checkpoint") and str(evil) in proc.stderr and "refused" in proc.stderr
    )
    assert not marker.exists()
    assert "top-1 error" not in proc.stdout  # no table at all


def test_members_with_different_classes_are_refused_with_one_line(world):
    proc = run_cli(f"checkpoints=[{world['a']},{world['other']}]")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {world['other']}") and "same class list" in line
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{root}/nothing/*.pt", "matches no file"),
        ("{root}/data", "is a directory without */checkpoints/best.pt"),
        ("{root}/missing.pt", "does not exist"),
        ("{root}/corrupt.pt", "is corrupt or truncated"),
        ("{root}/data/*/", "matches only directories without */checkpoints/best.pt"),  # was an IndexError
        ("", "no checkpoints given"),  # checkpoints=$UNSET: was "a directory without ..." (the cwd)
    ],
)
def test_bad_checkpoint_specs_are_one_line_errors(world, spec, message):
    (world["root"] / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises((EvaluationError, CheckpointError), match=message.replace("*", r"\*")) as info:
        evaluate_checkpoints(spec.format(root=world["root"]), EvalConfig(progress=False))
    assert "\n" not in str(info.value)


def test_an_unknown_option_value_is_a_one_line_error(world):
    with pytest.raises(EvaluationError, match="crops=5 is not valid; use one of 1, 10, 144"):
        evaluate_checkpoints(str(world["a"]), EvalConfig(crops=5))
    with pytest.raises(EvaluationError, match="device='tpu' is not valid"):
        evaluate_checkpoints(str(world["a"]), EvalConfig(device="tpu"))


def test_ensemble_of_the_same_checkpoint_twice_is_that_model(world):
    report = evaluate_checkpoints(
        [str(world["a"]), str(world["a"])], EvalConfig(progress=False, bootstrap=50)
    )
    alone, again, ensemble = report.rows
    assert (alone.name, again.name) == ("m1/seed0", "m1/seed0#2")  # a run alone keeps its experiment
    assert (ensemble.top1_err, ensemble.top5_err) == (alone.top1_err, alone.top5_err)
    assert ensemble.top1_err_ci == alone.top1_err_ci  # paired bootstrap: the same resamples


def test_one_pass_feeds_members_of_different_sizes_and_normalisations():
    """Members see their own crops and normalisation; the ensemble averages their probabilities."""
    torch.manual_seed(0)
    small = timm.create_model("bn_mlp", num_classes=5, in_chans=3, img_size=8).eval()
    large = timm.create_model("bn_mlp", num_classes=5, in_chans=3, img_size=12).eval()
    classes = tuple("abcde")
    members = [
        Member("s", Path("s.pt"), small, 8, (0.5,) * 3, (0.25,) * 3, 3, classes),
        Member("l", Path("l.pt"), large, 12, (0.4,) * 3, (0.2,) * 3, 3, classes),
    ]
    g = torch.Generator().manual_seed(0)
    views = {8: torch.randint(0, 256, (6, 10, 3, 8, 8), dtype=torch.uint8, generator=g),
             12: torch.randint(0, 256, (6, 10, 3, 12, 12), dtype=torch.uint8, generator=g)}  # fmt: skip
    labels = torch.randint(0, 5, (6,), generator=g)
    preds = predict(members, [(views, labels)], {"ensemble": [0, 1]}, torch.device("cpu"), forward_batch=7,
                    progress=False)  # fmt: skip

    def by_hand(model, x, mean, std):
        x = (x.flatten(0, 1).float() / 255 - mean) / std
        with torch.no_grad():
            return model(x).softmax(-1).view(6, 10, 5).mean(1)

    ps, pl = by_hand(small, views[8], 0.5, 0.25), by_hand(large, views[12], 0.4, 0.2)
    assert np.array_equal(preds.correct["s"], topk_correct(ps, labels).numpy())
    assert np.array_equal(preds.correct["l"], topk_correct(pl, labels).numpy())
    assert np.array_equal(preds.correct["ensemble"], topk_correct((ps + pl) / 2, labels).numpy())


def test_checkpoint_discovery_and_names(world):
    found = find_checkpoints(str(world["runs"]))
    assert found == [world["a"], world["b"]]
    assert member_names(found) == ["m1/seed0", "m2/seed0"]
    assert member_names([world["a"]]) == ["m1/seed0"]  # a run alone is named by its run, not "seed0"
    assert member_names([world["a"], world["root"] / "other.pt"]) == ["sweep/m1/seed0", "other"]
    last = world["a"].with_name("last.pt")
    assert member_names([world["a"], last, world["a"]]) == ["m1/seed0", "m1/seed0:last", "m1/seed0#2"]
    with pytest.raises(EvaluationError, match="no checkpoints given"):
        find_checkpoints([])


def test_a_folder_of_links_to_runs_is_an_ensemble_and_a_broken_member_is_named(world, tmp_path):
    picked = tmp_path / "picked"
    picked.mkdir()
    (picked / "first").symlink_to(world["a"].parents[1])  # ln -s <run dir>: how one collects an ensemble
    (picked / "second").symlink_to(world["b"].parents[1])
    (picked / "loop").symlink_to(picked)  # a link loop is walked once
    assert [p.resolve() for p in find_checkpoints(str(picked))] == [world["a"], world["b"]]
    broken = picked / "gone" / "seed0" / "checkpoints"
    broken.mkdir(parents=True)
    (broken / "best.pt").symlink_to(tmp_path / "moved-away.pt")  # its target was moved or deleted
    assert broken / "best.pt" in find_checkpoints(str(picked))  # not dropped without a word
    with pytest.raises(CheckpointError, match=r"gone/seed0/checkpoints/best.pt is a symbolic link to"):
        evaluate_checkpoints(str(picked), EvalConfig(progress=False, bootstrap=0))


def test_an_output_folder_that_cannot_be_created_in_is_refused_before_any_work(world, tmp_path):
    from bn_inception.evaluation.table import check_outputs

    (tmp_path / "results").symlink_to(tmp_path / "unmounted")  # a dangling link: mkdir would fail at the end
    with pytest.raises(EvaluationError, match="results is a broken symbolic link"):
        check_outputs(EvalConfig(output=str(tmp_path / "results" / "eval.json")), [world["a"]])
    with pytest.raises(EvaluationError, match="tb_dir=.*results is a broken symbolic link"):  # a traceback
        check_outputs(EvalConfig(tb_dir=str(tmp_path / "results" / "tb")), [world["a"]])  # after all the work
    if os.geteuid() == 0 and os.path.isdir("/sys/kernel"):  # os.access says yes to root; creating fails
        with pytest.raises(EvaluationError, match="/sys/kernel is not writable"):
            check_outputs(EvalConfig(output="/sys/kernel/eval.json"), [world["a"]])


def test_members_must_share_classes(world):
    a = load_member(world["a"], "a", torch.device("cpu"))
    other = load_member(world["other"], "o", torch.device("cpu"))
    with pytest.raises(EvaluationError, match=r"its class 0 is 'n00000000'.*same class list"):
        check_members([a, other])


def test_data_config_falls_back_to_the_checkpoints_record():
    recorded = {"name": "imagenet", "root": "/old", "input_size": 224, "workers": 8}
    assert resolve_data_kwargs(None, {"root": "/new"}, recorded, "x.pt") == {**recorded, "root": "/new"}
    assert resolve_data_kwargs(None, {"root": None}, recorded, "x.pt") == recorded
    chosen = {"name": "synthetic", "root": None}
    assert resolve_data_kwargs(chosen, {"root": None}, recorded, "x.pt") == chosen
    with pytest.raises(EvaluationError, match="x.pt records no data config; pass data=<name>"):
        resolve_data_kwargs(None, {}, None, "x.pt")


def test_population_stats_follow_algorithm_2_on_a_copy(world):
    """The recomputed first-layer BN mean is the average of the batch means of W u over the training
    batches (Algorithm 2), with u normalised as the member's data; the evaluated member stays as trained."""
    splits = world["splits"]
    member = load_member(world["a"], "a", torch.device("cpu"))
    before = {k: v.clone() for k, v in member.model.state_dict().items()}
    loader = build_eval_loader(MultiCropImages(splits.train, 1, [INPUT]), batch_size=8, workers=0, limit=16)
    batches = [(views[INPUT][:, 0], labels) for views, labels in loader]
    pop = with_population_stats(member, iter(batches), 2, torch.device("cpu"), channels_last=False)

    assert pop.bn_stats == "recomputed" and pop.name == "a [pop]" and pop.model is not member.model
    assert all(torch.equal(v, member.model.state_dict()[k]) for k, v in before.items())
    layer = member.model.hidden[0]
    with torch.no_grad():
        means = [
            layer.fc(to_model_input(x, member.mean, member.std, "cpu").flatten(1)).mean(0) for x, _ in batches
        ]
    expected = torch.stack(means).mean(0)
    assert torch.allclose(pop.model.hidden[0].bn.running_mean, expected, atol=1e-5)
    assert not torch.allclose(layer.bn.running_mean, expected, atol=1e-3)


def test_cli_on_runs_trained_by_train_py(tmp_path):
    """train.py writes two runs; evaluate.py rebuilds each from its checkpoint alone (no data= or model
    options on the command line), reproduces training-time validation, and ensembles them."""
    tree = make_synthetic_imagenet(
        tmp_path / "tree", num_classes=4, train_per_class=12, val_per_class=6, min_size=20, max_size=40
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    for seed in (0, 1):
        cmd = [
            sys.executable,
            str(REPO / "train.py"),
            "experiment=bn_x5",
            "data=synthetic",
            f"data.root={tree.root}",
            "data.workers=0",
            "data.input_size=16",
            "trainer.batch_size=8",
            "trainer.max_steps=4",
            "trainer.eval_every=2",
            "trainer.progress=false",
            f"seed={seed}",
            f"hydra.run.dir={tmp_path}/sweep/bn_x5/seed{seed}",
        ]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "eval.json"
    proc = run_cli(f"checkpoints={tmp_path}/sweep", f"output={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"seed0", "seed1", "ensemble"}  # named relative to their common parent
    for seed in (0, 1):
        trained = json.loads((tmp_path / f"sweep/bn_x5/seed{seed}/results.json").read_text())
        row = rows[f"seed{seed}"]
        assert row["top1_err"] == pytest.approx(100 - trained["best_top1"], abs=1e-6)
        assert row["images"] == 24 and row["crops"] == 1
    assert rows["ensemble"]["models"] == 2
    assert rows["ensemble"]["top5_err"] <= rows["ensemble"]["top1_err"]


def test_output_never_overwrites_what_evaluate_did_not_write(world, single_crop_run, tmp_path):
    _, _, ours = single_crop_run
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"my": "notes"}')
    for output, message in [
        (world["a"], "is a checkpoint"),
        (tmp_path / "table.pt", "is a checkpoint"),
        (foreign, "exists and was not written by evaluate.py"),
        (world["a"] / "x.json", "is a file, not a folder"),
    ]:
        before = world["a"].read_bytes()
        proc = run_cli(f"checkpoints={world['a']}", f"output={output}", "images=4", timeout=60)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith("error:") and proc.stdout == ""  # no table
        assert world["a"].read_bytes() == before and foreign.read_text() == '{"my": "notes"}'
    # what evaluate.py wrote itself it may replace
    proc = run_cli(f"checkpoints={world['a']}", f"output={ours}", "images=4", "bootstrap=0")
    assert proc.returncode == 0 and json.loads(ours.read_text())["image_range"] == [0, 4]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["model_kwargs"].update(checkpoint_path="/etc/passwd"), "passes 'checkpoint_path'"),
        (lambda c: c["model_kwargs"].update(pretrained=True), "passes 'pretrained'"),
        (lambda c: c.update(model_name="resnet50"), "names model 'resnet50'"),
        (lambda c: c.pop("model_kwargs"), "has no valid model_name/model_kwargs"),
        (lambda c: next(v for k, v in c["model"].items() if "running_var" in k).fill_(float("nan")),
         "NaN or infinite weights or BN statistics"),
        (lambda c: [v.fill_(float("nan")) for v in c["model"].values() if v.is_floating_point()],
         "NaN or infinite weights"),
    ],
)  # fmt: skip
def test_a_checkpoint_cannot_pick_arbitrary_model_arguments_or_carry_non_finite_weights(
    world, tmp_path, change, message
):
    ckpt = torch.load(world["a"], weights_only=True)
    change(ckpt)
    path = tmp_path / "changed.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_member(path, "x", torch.device("cpu"))
    assert "\n" not in str(info.value)


def test_the_json_holds_readable_numbers(single_crop_run):
    _, table, _ = single_crop_run
    errors = [r[k] for r in table["rows"] for k in ("top1_err", "top5_err")]
    assert all(isinstance(v, float | int) and round(v, 6) == v for v in errors)  # 67.1, not 67.10000000000001
    assert table["written_by"] == "bn-inception evaluate.py"
