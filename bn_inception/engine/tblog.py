"""TensorBoard: the run's writer, HParams entries, the sweep-comparison layout, activation percentiles."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

#: Metrics shown as columns of TensorBoard's HParams dashboard (logged as scalars at every evaluation), with
#: their column titles (the scalar tags stay as they are for other readers).
HPARAM_METRICS = {
    "hparam/best_top1": "best top-1 (%)",
    "hparam/final_top1": "final top-1 (%)",
    "hparam/final_top5": "final top-5 (%)",
    "hparam/steps_to_target": "steps to target",
}

#: Figure 1 plots the 15th, 50th and 85th percentiles of a sigmoid's input over training (Sec. 4.1).
PERCENTILES = (15, 50, 85)

#: Figure 1 (b, c) follows "a typical sigmoid", one unit, not the pooled layer: besides the layer
#: (``act/<probe>/p50``: all units, all images) each probe logs its first unit (the first channel of a
#: convolution, over images and positions) as ``act/<probe>/unit0/p50``. The pooled distribution mixes
#: units whose learned BN scale and shift differ, so it moves even where each unit's does not.
TYPICAL_UNIT = "unit0"

# torch.quantile refuses inputs above 2**24 elements; a strided subsample of this size keeps the
# percentiles exact to well under 0.1% while costing little on large conv maps.
_MAX_QUANTILE_ELEMENTS = 1 << 22


def run_hparams(config: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The keys that say what a run is: experiment, seed, dataset, then the paper's levers (Sec. 4.2.1): BN,
    nonlinearity, initial lr, L2 weight, dropout, LRN, decay speed-up, shuffling, distortions, batch. The
    other 50 config keys (paths, logging) would only push these out of sight in TensorBoard's HParams."""
    model, data = config.get("model", {}), config.get("data", {})
    values = {
        "experiment": info["experiment"],
        "seed": info["seed"],
        "dataset": data.get("name"),
        "norm": model.get("norm"),
        "act": model.get("act", "sigmoid" if model.get("name") == "bn_mlp" else None),
        "lr": info["lr"],
        "weight_decay": info["weight_decay"],
        "dropout": model.get("drop_rate"),
        "lrn": model.get("lrn"),
        "decay_speedup": config.get("schedule", {}).get("speedup"),
        "shuffle": data.get("shuffle"),
        "distortion": data.get("distortion"),
        "batch": info["global_batch"],
    }
    return {k: v for k, v in values.items() if v is not None}


#: What TensorBoard's HParams table shows before anyone ticks a box. Its page shows 5 hyperparameters, those
#: flagged ``differs`` first, and its server lists a logged experiment's keys flagged ``differs`` first, then
#: by name; so flagging these five (and only these) makes them the visible columns, in the order dataset,
#: experiment, lr, norm, seed. The other keys stay one click away in the left pane.
SHOWN_HPARAMS = ("experiment", "seed", "dataset", "norm", "lr")


def write_hparams(writer: SummaryWriter, hparams: Mapping[str, Any]) -> None:
    """Record the run's hyperparameters in the run itself (not in a child run, as ``add_hparams`` does), with
    :data:`SHOWN_HPARAMS` visible; the metrics arrive later as scalars (:data:`HPARAM_METRICS`)."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    exp, ssi, sei = hparams_summary(dict(hparams), {m: 0.0 for m in HPARAM_METRICS})
    plugin_data = exp.value[0].metadata.plugin_data
    data = HParamsPluginData.FromString(plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in SHOWN_HPARAMS
    for metric in data.experiment.metric_infos:
        metric.display_name = HPARAM_METRICS.get(metric.name.tag, metric.name.tag)
    plugin_data.content = data.SerializeToString()
    for summary in (exp, ssi, sei):
        writer.file_writer.add_summary(summary)


def write_compare_layout(writer: SummaryWriter) -> None:
    """A custom-scalars layout that overlays every run's validation curves (a sweep on one chart)."""
    charts = {"val top-1 (%)": "val/top1", "val top-5 (%)": "val/top5", "train loss": "train/loss",
              "learning rate": "train/lr"}  # fmt: skip
    writer.add_custom_scalars({
        "Compare runs": {title: ["Multiline", [tag]] for title, tag in charts.items()},
        "Nonlinearity inputs (Figure 1)": {"percentiles 15/50/85": ["Multiline", [r"act/.*"]]},
    })  # fmt: skip


class ActivationPercentiles:
    """Collects the inputs of chosen nonlinearities (Figure 1 b, c plots the input) while :meth:`recording`,
    then their percentiles. The hooks do nothing outside :meth:`recording`: training steps pay nothing."""

    def __init__(self, modules: Mapping[str, nn.Module], max_images: int) -> None:
        self.max_images, self._active, self._seen = max_images, False, dict.fromkeys(modules, 0)
        self._values = {key: [] for n in modules for key in (n, f"{n}/{TYPICAL_UNIT}")}
        self._handles = [m.register_forward_pre_hook(partial(self._hook, n)) for n, m in modules.items()]

    def _hook(self, name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        take = min(inputs[0].shape[0], self.max_images - self._seen[name]) if self._active else 0
        if take > 0:
            x = inputs[0].detach()[:take].float()
            self._seen[name] += take
            self._values[name].append(x.flatten().cpu())
            self._values[f"{name}/{TYPICAL_UNIT}"].append(x[:, 0].flatten().cpu())

    @contextmanager
    def recording(self) -> Iterator[None]:
        self._seen = dict.fromkeys(self._seen, 0)
        for values in self._values.values():
            values.clear()
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def percentiles(self) -> dict[str, float]:
        """``{"act/<name>/p15": ..., "act/<name>/unit0/p15": ..., ...}``: over all units of the layer and
        all recorded images, and over the first unit alone (see :data:`TYPICAL_UNIT`)."""
        out: dict[str, float] = {}
        q = torch.tensor([p / 100 for p in PERCENTILES])
        for name, chunks in self._values.items():
            if not chunks:
                continue
            values = torch.cat(chunks)
            if values.numel() > _MAX_QUANTILE_ELEMENTS:
                values = values[:: values.numel() // _MAX_QUANTILE_ELEMENTS + 1]
            for p, v in zip(PERCENTILES, torch.quantile(values, q).tolist(), strict=True):
                out[f"act/{name}/p{p}"] = v
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
