"""What a training run shows while it runs, and its throughput figures.

On a terminal (``trainer.progress=true``, stderr a TTY): one tqdm bar named after the run, so parallel runs
(``hydra/launcher=local_parallel``) can be told apart. Anywhere else (a log file, a pipe, a SLURM job, or
``trainer.progress=false``): one plain line every ``trainer.log_every`` steps with the step, loss, lr,
images/s, the share of time spent waiting for data, and the ETA, as timm's and torchvision's trainers print;
a bar's carriage returns would fill a log file with one line per second. Evaluation lines name the run too.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("bn_inception.engine.trainer")


class Progress:
    """The run's console output and its training-time bookkeeping (evaluation and saving excluded)."""

    def __init__(self, label: str, trainer: Any, is_main: bool, state: Any, global_batch: int) -> None:
        self.label, self.enabled = label, is_main
        self.max_steps, self.global_batch = trainer.max_steps, global_batch
        self.use_bar = is_main and trainer.progress and sys.stderr.isatty()
        self.images0, self.seconds0, self.step0 = state.train_images, state.train_seconds, state.step
        self.start_time = self.tick_time = time.perf_counter()
        self.tick_step, self.paused_seconds, self.data_wait = state.step, 0.0, 0.0
        self.bar: tqdm | None = None
        self._stack = ExitStack()

    def start(self, step: int) -> None:
        self.start_time = self.tick_time = time.perf_counter()
        self.step0 = self.tick_step = step
        if self.use_bar:
            self._stack.enter_context(logging_redirect_tqdm())
            self.bar = tqdm(total=self.max_steps, initial=step, desc=self.label, unit="step",
                            dynamic_ncols=True, mininterval=1.0, file=sys.stderr)  # fmt: skip

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def tick(self, step: int, loss: float, lr: float) -> dict[str, float]:
        """At a logging step: the ``perf/*`` scalars since the last tick; the bar's postfix or a log line."""
        now = time.perf_counter()
        elapsed = max(now - self.tick_time, 1e-9)
        img_s = (step - self.tick_step) * self.global_batch / elapsed
        wait = min(self.data_wait / elapsed, 1.0)
        self.tick_time, self.tick_step, self.data_wait = now, step, 0.0
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{img_s:.0f}", refresh=False)
        elif self.enabled:
            s = int((now - self.start_time) / max(step - self.step0, 1) * (self.max_steps - step))  # ETA
            log.info("%s | step %d/%d | loss %.4f | lr %.4g | %.0f img/s | data wait %.0f%% | ETA "
                     "%d:%02d:%02d", self.label, step, self.max_steps, loss, lr, img_s, 100 * wait, s // 3600,
                     s % 3600 // 60, s % 60)  # fmt: skip
        return {"perf/img_per_s": img_s, "perf/data_wait_frac": wait}

    def evaluation(self, state: Any, record: dict[str, float]) -> None:
        log.info("%s | step %d/%d | val top1 %.2f top5 %.2f | train loss %.4f | best %.2f @ %d", self.label,
                 state.step, self.max_steps, record["top1"], record["top5"], record["train_loss"],
                 state.best_top1, state.best_step)  # fmt: skip

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Evaluation and saving: not training time, not in the next tick's images/s."""
        t = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - t
            self.paused_seconds += spent
            self.tick_time += spent

    def totals(self, state: Any) -> tuple[int, float]:
        """Images trained on and training seconds, this segment plus the segments before (a resume)."""
        images = self.images0 + (state.step - self.step0) * self.global_batch
        seconds = self.seconds0 + (time.perf_counter() - self.start_time - self.paused_seconds)
        return images, seconds

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._stack.close()
