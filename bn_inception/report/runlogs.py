"""Read a sweep's run directories: `results.json` summaries and TensorBoard scalars (docs/design.md)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RESULTS_FILE = "results.json"
MNIST_EXPERIMENT = "mnist_figure1"
PERCENTILE_TAGS = ("p15", "p50", "p85")


class ReportError(Exception):
    """Bad input to the report: one line that says what was wrong and what is valid."""


@dataclass(frozen=True)
class Eval:
    step: int
    top1: float  # percent; may be NaN if the trainer logged a non-finite evaluation


@dataclass(frozen=True)
class RunLog:
    path: str  # the run directory relative to the sweep directory, POSIX style ("." for the sweep itself)
    run_dir: Path
    name: str
    experiment: str
    seed: int | None
    status: str  # "completed", "diverged", "running" (others are kept as written)
    diverged_at_step: int | None  # set when status == "diverged"
    evals: tuple[Eval, ...]  # sorted by step, one entry per step (the last one written wins)

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def finite_evals(self) -> tuple[Eval, ...]:
        return tuple(e for e in self.evals if math.isfinite(e.top1))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_run(path: Path, sweep_dir: Path) -> RunLog:
    def malformed(what: str) -> ReportError:
        return ReportError(f"malformed {path}: {what} (see the results.json format in docs/design.md)")

    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise malformed(f"not valid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise malformed("the top level must be a JSON object")
    experiment, status = data.get("experiment"), data.get("status")
    if not isinstance(experiment, str) or not experiment:
        raise malformed(f"'experiment' must be a non-empty string, got {experiment!r}")
    if not isinstance(status, str):
        raise malformed(f"'status' must be a string (completed|diverged|running), got {status!r}")
    for key in ("seed", "diverged_at_step", "steps"):
        if data.get(key) is not None and not _is_int(data[key]):
            raise malformed(f"'{key}' must be an integer or null, got {data[key]!r}")
    if "evals" not in data:
        raise malformed("missing 'evals' (the evaluation history)")
    evals = _evals(data["evals"], malformed)
    diverged_at = data.get("diverged_at_step") if status == "diverged" else None
    if status == "diverged" and diverged_at is None:  # older or interrupted writers: the last step done
        diverged_at = data.get("steps") or (evals[-1].step if evals else 0)
    name = data.get("name")
    return RunLog(
        path=path.parent.relative_to(sweep_dir).as_posix(),
        run_dir=path.parent,
        name=name if isinstance(name, str) and name else experiment,
        experiment=experiment,
        seed=data.get("seed"),
        status=status,
        diverged_at_step=diverged_at,
        evals=evals,
    )


def _evals(raw: object, malformed: Callable[[str], ReportError]) -> tuple[Eval, ...]:
    if not isinstance(raw, list):
        raise malformed(f"'evals' must be a list of {{'step', 'top1', ...}} objects, got {raw!r:.60}")
    by_step: dict[int, float] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or "step" not in entry or "top1" not in entry:
            raise malformed(f"evals[{i}] must be an object with 'step' and 'top1', got {entry!r:.60}")
        # JSON has no NaN; a trainer may write null (or Python's NaN extension) for a non-finite eval.
        step, top1 = entry["step"], math.nan if entry["top1"] is None else entry["top1"]
        if not _is_int(step):
            raise malformed(f"evals[{i}].step must be an integer, got {step!r}")
        if isinstance(top1, bool) or not isinstance(top1, int | float):
            raise malformed(f"evals[{i}].top1 must be a number (percent), got {top1!r}")
        by_step[step] = float(top1)
    return tuple(Eval(step, by_step[step]) for step in sorted(by_step))


def load_runs(sweep_dir: str | Path) -> list[RunLog]:
    """Every results.json under `sweep_dir`, in a fixed order (experiment, seed, path)."""
    sweep = Path(sweep_dir)
    if not sweep.exists():
        raise ReportError(
            f"sweep directory {sweep} does not exist: pass a directory that holds run directories "
            f"(each with a {RESULTS_FILE})"
        )
    if not sweep.is_dir():
        raise ReportError(f"{sweep} is not a directory: pass the sweep directory that holds the runs")
    if not (found := sorted(sweep.rglob(RESULTS_FILE))):
        raise ReportError(
            f"no {RESULTS_FILE} found under {sweep}: pass a sweep or run directory written by train.py"
        )
    runs = [load_run(path, sweep) for path in found]
    return sorted(runs, key=lambda r: (r.experiment, r.seed is None, r.seed or 0, r.path))


def is_mnist_run(run: RunLog) -> bool:
    return run.experiment == MNIST_EXPERIMENT or run.experiment.startswith(MNIST_EXPERIMENT + "_")


def hydra_value(run_dir: Path, key: str) -> object:
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(config)
        return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    except Exception as err:  # any YAML/OmegaConf error: the file is not a usable config
        raise ReportError(f"cannot read {config}: {type(err).__name__}: {err}".splitlines()[0]) from None


_NO_BN = re.compile(r"(?:^|[^a-z0-9])(?:no|without)[_-]?bn(?:$|[^a-z0-9])|(?:^|[_-])none$")
_WITH_BN = re.compile(r"(?:^|[^a-z0-9])(?:with[_-]?)?bn(?:$|[^a-z0-9])|(?:^|[_-])(?:batch|paper|ghost)$")


def uses_batch_norm(run: RunLog) -> bool:
    """`model.norm` of its `.hydra/config.yaml` ("none": no), else its name: a `nobn`/`no_bn`/`without_bn`
    token or a trailing `_none` (mnist_figure1.yaml's `mnist_figure1_${model.norm}`) -> no; `bn`,
    `_batch`/`_paper`/`_ghost` -> yes."""
    if (run.run_dir / ".hydra" / "config.yaml").is_file():
        norm = hydra_value(run.run_dir, "model.norm")
        return norm not in (None, False) and str(norm).lower() != "none"
    name = run.name.lower()
    if _NO_BN.search(name) or _WITH_BN.search(name):
        return not _NO_BN.search(name)
    raise ReportError(
        f"cannot tell whether {MNIST_EXPERIMENT} run {run.path} uses BN: it has no .hydra/config.yaml with "
        f"model.norm and its name {run.name!r} ends in neither _none nor _batch (nor has a bn/nobn token)"
    )


def act_percentiles(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{probe: {"p15"|"p50"|"p85": [(step, value)]}} from ``act/<probe>/<stat>`` scalars, probes with all
    three; the last value logged at a step wins (as after a resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(run_dir.glob("events.out.tfevents.*")):
        return {}
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    probes: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for tag in sorted(t for t in accumulator.Tags().get("scalars", []) if t.startswith("act/")):
        probe, _, stat = tag[len("act/") :].rpartition("/")
        if probe and stat in PERCENTILE_TAGS:
            by_step = {event.step: float(event.value) for event in accumulator.Scalars(tag)}
            probes.setdefault(probe, {})[stat] = sorted(by_step.items())
    return {probe: stats for probe, stats in probes.items() if set(stats) == set(PERCENTILE_TAGS)}


def last_hidden_probe(probes: list[str]) -> str:
    """The layer with the highest first number (`5b_3x3` over `4c_3x3`; unnumbered last, alphabetically),
    its logged unit (`hidden3/unit0`: the paper's "typical sigmoid") if any, else the layer."""

    def rank(probe: str) -> tuple[int, int, str, bool]:
        layer, _, unit = probe.partition("/")
        numbers = re.findall(r"\d+", layer)
        return (1, int(numbers[0]), layer, bool(unit)) if numbers else (0, 0, layer, bool(unit))

    return max(probes, key=rank)
