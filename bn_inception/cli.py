"""What ``train.py`` and ``evaluate.py`` share around their Hydra job (no torch here: it runs before the
job's heavy imports): the pre-flight check, one-line errors, run names, the commands the project prints.

:func:`preflight` composes the config of every job the command line asks for (each combination of a ``-m``
sweep, an experiment's own ``hydra.sweeper.params`` included) as Hydra's launcher will, and validates it
against the schema: a wrong type, an unknown key or option, a value out of range, or a directory name that
would leave the sweep ends the command with one line, ``error: <key>=<value> is not valid; <what is>``, and
exit status 2, before Hydra creates a directory (Hydra alone would say it in several lines, if the job ever
reached the value, after writing ``.hydra/`` into the run directory).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bn_inception.config import (
    SAME_RUN_KEYS,
    SCHEMAS,
    ConfigError,
    did_you_mean,
    field_of,
    register_configs,
    validate,
)

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # inside the package: a wheel carries them

#: Exit status of a command refused for its configuration (as argparse's usage errors); 1 is a run error.
EXIT_CONFIG = 2


def preflight(app: str, argv: Sequence[str] | None = None, config_dir: Path = CONFIG_DIR) -> None:
    """Compose and validate every job of this command line; on the first bad value print one line and exit 2.

    ``app`` is ``train`` or ``evaluate`` (the config name and the schema). Help, ``--cfg`` and the other
    informational flags are left to Hydra. Every override form is Hydra's to read (``+key``, ``~key``,
    ``glob()``, ``range()``...): what it composes is checked against the schema, what it refuses is said in
    one line.
    """
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    informational = args.help or args.hydra_help or args.info or args.shell_completion or args.cfg
    if informational or args.config_path or args.config_dir:
        return
    try:
        for cfg in compose_jobs(args.config_name or app, args.overrides, args.multirun, config_dir):
            validate(task_config(cfg), SCHEMAS[app])
            check_job_dir(cfg, args.multirun)
            check_launcher(cfg)
    except ConfigError as e:
        _refuse(str(e))
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors, turned into one line
        _refuse(explain_composition_error(e, args.overrides, SCHEMAS[app]))


#: Sweepers whose jobs the pre-flight expands (as Hydra's basic sweeper); any other is given the checked base
#: config and its own syntax (hydra-optuna-sweeper's ``interval(1,10)``, ``tag(log, ...)``).
BASIC_SWEEPERS = (
    "hydra_plugins.bn_inception_sweeps.SummarySweeper",
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
)


def compose_jobs(config_name: str, overrides: Sequence[str], multirun: bool, config_dir: Path) -> list[Any]:
    """The config of every job the command line launches (one without ``-m``), as Hydra composes them."""
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name=config_name):
        hydra = GlobalHydra.instance().hydra
        mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        base = hydra.compose_config(config_name, list(overrides), run_mode=mode, from_shell=True)
        if not multirun or base.hydra.sweeper._target_ not in BASIC_SWEEPERS:
            return [base]  # another sweeper's syntax (optuna's interval(), tag()) is its own to expand
        # As Hydra's BasicSweeper: the config's hydra.sweeper.params first, the command line on top; the
        # config loader expands glob() over a group's options.
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
        parser = OverridesParser.create(config_loader=hydra.config_loader)
        combos = BasicSweeper.split_arguments(parser.parse_overrides([*params, *overrides]), None)[0]
        return [hydra.config_loader.load_sweep_config(base, list(combo)) for combo in combos]


def task_config(cfg: Any) -> dict[str, Any]:
    """The job's own config, as the job receives it (without ``hydra``, interpolations resolved)."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    return OmegaConf.to_container(OmegaConf.create(container), resolve=True)


def job_dir(cfg: Any, multirun: bool) -> Path:
    """The run directory of a composed job config: ``hydra.run.dir``, or the sweep's dir and subdir."""
    if not multirun:
        return Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    sweep = OmegaConf.select(cfg, "hydra.sweep")
    return Path(str(sweep.dir), str(sweep.subdir))


def compose(app: str, overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """The config ``python <app>.py <overrides>`` runs (``app``: train or evaluate), as the job receives it,
    checked against the schema: how a benchmark or a test gets a config, never by writing keys by hand."""
    cfg = task_config(compose_jobs(app, overrides, False, config_dir)[0])
    validate(cfg, SCHEMAS[app])
    return cfg


def check_job_dir(cfg: Any, multirun: bool) -> None:
    """The job's directory can be made, and a sweep job's subdirectory (built from override values) stays
    inside the sweep directory."""
    if multirun:
        subdir = str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        normal = os.path.normpath(subdir)
        if os.path.isabs(subdir) or normal == ".." or normal.startswith(".." + os.sep):
            raise ConfigError(
                f"hydra.sweep.subdir={subdir} is not valid; the values that name a sweep job's directory "
                f"must keep it inside hydra.sweep.dir (no absolute paths, no '..')"
            )
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if not str(OmegaConf.select(cfg, key)).strip():  # `hydra.run.dir=$RUN_DIR` with the variable unset
        raise ConfigError(f"{key} is empty (an unset variable in a job script?); give a folder (. for here)")
    path = job_dir(cfg, multirun)
    if problem := unwritable(path):
        raise ConfigError(f"the run directory {path} cannot be made: {problem}")


def check_launcher(cfg: Any) -> None:
    """A SLURM launcher whose warning signal could come as the job starts is refused: every segment would
    be warned, saved and requeued before it trained a step (a requeue loop with no progress)."""
    timeout_min = OmegaConf.select(cfg, "hydra.launcher.timeout_min", default=None)
    delay = OmegaConf.select(cfg, "hydra.launcher.signal_delay_s", default=None)
    if timeout_min is None or delay is None:
        return
    early = 60  # SLURM sends the --signal warning up to this much earlier than asked (sbatch(1))
    if delay + early >= timeout_min * 60:
        raise ConfigError(
            f"hydra.launcher.signal_delay_s={delay} is not valid with timeout_min={timeout_min}; SLURM may "
            f"send its warning up to {early} s before signal_delay_s, so a job could be warned and requeued "
            f"as it starts, without training: use signal_delay_s < {timeout_min * 60 - early} or a longer "
            f"timeout_min (README: SLURM)"
        )


def unwritable(path: Path) -> str | None:
    """Why files cannot be made at ``path``: its nearest existing folder is a file or a broken link, or a
    file cannot be created there. Tried, not asked: ``os.access`` says yes to root on a read-only share or
    a FUSE mount that refuses it."""
    existing = Path(path).absolute()
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        broken = existing.is_symlink() and not existing.exists()
        return f"{existing} is {'a broken symbolic link' if broken else 'a file, not a folder'}"
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        return f"{existing} is not writable ({e.strerror or e})"
    return None


def explain_composition_error(error: BaseException, overrides: Sequence[str], schema: type) -> str:
    """Hydra's/OmegaConf's composition errors as one line naming the key, the value and what is valid."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = error.__cause__ or error
    if isinstance(error, OverrideParseException):
        return (
            f"cannot read the override {error.override!r}; quote a value that contains '=', ',', "
            f"brackets or spaces, e.g. 'key=\"a=b\"'"
        )
    if isinstance(error, MissingConfigException) and error.options:
        group = str(error.missing_cfg_file).rsplit("/", 1)[0]
        value = _override_value(overrides, group) or str(error.missing_cfg_file).rsplit("/", 1)[-1]
        return f"{group}={value} is not valid; use one of: {', '.join(sorted(error.options))}"
    key = str(getattr(cause, "full_key", "") or "")
    removed = [o.partition("=")[0][1:] for o in overrides if o.startswith("~") and not o.startswith("~~")]
    removed = [k for k in removed if k and (k == key or f"'{k}'" in str(error) or str(error).endswith(k))]
    if removed and field_of(schema, removed[0]) is not None:
        key = removed[0]
        return f"~{key} is not valid: a key of the schema cannot be removed; set it instead ({key}=...)"
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and key:
        if schema is SCHEMAS["evaluate"] and key.startswith("data.") and field_of(schema, key) is not None:
            return f"{key} is not set here; add it to the checkpoint's data config with +{key}=<value>"
        return f"{key} is not a config key{did_you_mean(key, schema)}; --cfg job lists every key"
    # a config file (an experiment) sets a key the chosen schema does not have: Hydra says so in its text
    found = re.search(r"In '([^']+)': Config\w*Error.*?full_key: (\S+)", str(error), re.S)
    if found:
        where, key = found.groups()
        section = key.split(".")[0]
        return f"{key}, set by {where}, is not a key of the chosen {section} config; choose a matching one"
    if isinstance(cause, ValidationError) and key:
        value = _override_value(overrides, key)
        return f"{key}={value} is not valid; {_expected(key, value, schema)}"
    # all of the message on one line (Hydra's say what to do on their later lines)
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def _override_value(overrides: Sequence[str], key: str) -> str | None:
    for item in reversed(overrides):
        name, sep, value = item.partition("=")
        if sep and name.lstrip("+~") == key:
            return value
    return None


def _expected(key: str, value: str | None, schema: type) -> str:
    f = field_of(schema, key)
    kind = str(f.type) if f is not None else ""
    words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}
    base = kind.split("|")[0].strip()
    text = "it must be " + words.get(base, f"of type {kind or 'the schema says'}")
    if "None" in kind:
        text += " (or null)"
    if base == "float" and value and value.strip().endswith("%"):
        text += "; give a percentage as a plain number, without '%'"
    return text


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def run_subdir(name: str, seed: int, overrides: Sequence[str], exclude: Sequence[str]) -> str:
    """A sweep job's directory below the sweep: ``<name>/<choices>/seed<k>``, ``<choices>`` the overrides
    that make this job differ from the experiment (``model.norm:ghost+optim.lr_mult:10``), without the
    keys in ``exclude`` or ``config.SAME_RUN_KEYS`` and without group options that are the defaults. The
    characters are ones no shell or Hydra override needs quoted: a printed path can be pasted as it is."""
    entries = OmegaConf.load(CONFIG_DIR / "train.yaml").get("defaults", [])  # the group options by default
    defaults = {
        k: str(v) for e in entries if OmegaConf.is_dict(e) for k, v in e.items() if "override" not in k
    }
    items = []
    for item in sorted(str(o) for o in overrides):
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key in exclude or key in SAME_RUN_KEYS or key.startswith("hydra") or defaults.get(key) == value:
            continue
        items.append(f"{key}:{re.sub(r'[^A-Za-z0-9._:-]+', '_', value).strip('_') or '_'}")
    return "/".join([name, *(["+".join(items)] if items else []), f"seed{seed}"])


if not OmegaConf.has_resolver("run_subdir"):  # also in a launcher's workers, which import this module
    OmegaConf.register_new_resolver("run_subdir", run_subdir)


def process_rank() -> int:
    """This process's rank under torchrun or SLURM (0 when alone)."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def quiet_unless_main() -> None:
    """Processes other than rank 0 log warnings only, and not into the run's log file (rank 0 owns it)."""
    if process_rank() == 0:
        return
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)


@contextmanager
def one_line_errors(known: tuple[type[BaseException], ...], multirun: bool) -> Iterator[None]:
    """Report ``known`` errors as one line (``error: ...``) instead of a traceback: a single run exits 1;
    inside a sweep the error is re-raised so Hydra records the job as failed and goes on to the next one."""
    try:
        yield
    except known as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if multirun:
            log.error("error: %s", message)
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


@contextmanager
def quick_exit(multirun: bool) -> Iterator[None]:
    """When the job ends its process (a single run, a SLURM job of a sweep, or any exit: a one-line error, a
    signal's 75), spare the process the garbage collector's passes over its whole heap at interpreter exit:
    seconds of CPU on a busy node (5.0 s vs 1.1 s from a run's summary to its end, measured on a loaded
    2-core machine), spent within a scheduler's KillWait (SIGKILL 30 s after SIGTERM) or while torchrun's
    agents decide how to restart a group. A local sweep runs its next job in this process: nothing is frozen
    there."""
    try:
        yield
    finally:
        if not multirun or "SUBMITIT_FOLDER" in os.environ or sys.exc_info()[0] is SystemExit:
            import gc

            gc.freeze()


#: Characters that make Hydra's override grammar read a value as something other than one string (checked
#: against its parser: tests/test_config.py).
_HYDRA_SPECIAL = set("=,[]{}()'\"<>!&;#~^$`\\")


def override(key: str, value: object) -> str:
    """``key=value`` as one shell word that Hydra reads back as exactly ``value`` (a path with '=' or ','
    in it, spaces, brackets): every command the project prints must work when pasted."""
    text = str(value)
    if any(c in _HYDRA_SPECIAL for c in text):
        # Hydra's quoted strings: a quote is escaped with a backslash, and backslashes only need doubling
        # where they precede a quote or end the string.
        text = '"' + re.sub(r'(\\*)("|$)', lambda m: m[1] * 2 + ('\\"' if m[2] else ""), text) + '"'
    return shlex.quote(f"{key}={text}")


def command(script: str, *words: str) -> str:
    """A pasteable command line: ``python <script> <words...>`` (words already shell-quoted), or
    ``bn-train``/``bn-evaluate`` when this process is that installed command (no checkout to run it in)."""
    if Path(sys.argv[0]).name in ("bn-train", "bn-evaluate") and script in ("train.py", "evaluate.py"):
        return " ".join([f"bn-{script[:-3]}", *words])
    return " ".join(["python", script, *words])


def continue_command(
    task: Sequence[str], hydra: Sequence[str], run_dir: Path, sweep_dir: str | None, env: Any = os.environ
) -> str:
    """How to continue an interrupted run, from where it ran. Inside a SLURM job a local command would train
    on the login node: a job of a SLURM sweep is submitted again by the same sweep (one job), a job script's
    job is requeued."""
    job = env.get("SLURM_JOB_ID")
    if job and sweep_dir is not None:
        launcher = [o for o in hydra if o.startswith(("hydra/launcher=", "hydra.launcher."))]
        words = [shlex.quote(o) for o in [*launcher, *task] if not o.startswith("hydra.sweep.dir=")]
        again = command("train.py", "-m", *words, override("hydra.sweep.dir", sweep_dir))
        return f"{again}  (if SLURM job {job} was not requeued: squeue -j {job})"
    if job:
        return f"scontrol requeue {job}  (if SLURM job {job} was not requeued: squeue -j {job})"
    words = [shlex.quote(o) for o in task if not o.startswith("hydra.run.dir=")]
    return command("train.py", *words, override("hydra.run.dir", run_dir))
