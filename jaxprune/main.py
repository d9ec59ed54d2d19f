"""Command-line entry point: ``python -m jaxprune.main --config=configs/irp.py --workdir=runs/irp``.

Every config key can be overridden (``--config.num_seeds=16``). Bad input — an unknown experiment, model or
dataset, a value out of range, a malformed override, an unwritable workdir, an unprepared TFDS dataset — is
reported as one line on stderr with exit code 2, before anything is written to the workdir. A workdir that
holds a finished run is reported and left alone unless ``--config.overwrite=True``; one made by a different
config is refused with the keys that differ.
"""
from __future__ import annotations

import difflib
import importlib.util
import logging as pylogging
import os
import re
import shutil
import sys
import traceback

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxprune import config as config_lib
from jaxprune import metrics, parallel
from jaxprune import workdir as wd
from jaxprune.config import RUN_KEYS
from jaxprune.errors import AllSeedsFailed, ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/irp.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<experiment>).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0, "CPU only: split the seeds over up to this many XLA CPU devices per process (0 = one per "
    "core); the results do not depend on it", lower_bound=0)


def _fail(message: str, code: int = 2) -> None:
    print(f"jaxprune: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with any flag/override error turned into one line and exit code 2: an override of a key
    the config does not have is named, with the closest keys it has; an exception raised in the config file (a
    scorer ``pai.register`` refuses, a NameError in ``get_config``) with its reason and the file's line."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # re-raised below unless it comes from the user's input
        message = unknown_override(argv) or config_file_error(e, _config_file(argv))
        if message is None and not isinstance(e, (flags.Error, ValueError, TypeError, AttributeError, KeyError,
                                                  FileNotFoundError, SyntaxError)):
            raise
        _fail(message or f"bad command line: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def _config_file(argv: list[str]) -> str | None:
    """The value of ``--config=FILE`` (or ``--config FILE``) in ``argv``."""
    for i, arg in enumerate(argv):
        match = re.fullmatch(r"--?config(?:=(.*))?", arg)
        if match:
            return match.group(1) if match.group(1) is not None else next(iter(argv[i + 1:]), None)
    return None


def config_file_error(error: BaseException, spec: str | None) -> str | None:
    """One line for an exception raised while the config file ``spec`` (``path[:args]``) ran, else None.

    ml_collections' loader re-raises such an exception as a flag error whose message is the traceback's header
    only; the original is on the ``__context__`` chain. The reason is the deepest exception on that chain raised
    through the file (e.g. ``pai.register``'s ConfigError, not the TypeError it was raised from), the line its
    innermost frame in the file: "--config=FILE line N: reason".
    """
    path = os.path.realpath(spec.split(":", 1)[0]) if spec else None
    found, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if os.path.realpath(f.filename) == path]
        if lines:
            found = (error, lines[-1])
        error = error.__cause__ or error.__context__
    if found is None:
        return None
    error, line = found
    reason = " ".join(str(error).split()) if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
    return f"--config={spec} line {line}: {reason}"


def _load_config(spec: str) -> ml_collections.ConfigDict:
    """``get_config(*args)`` of the config file ``path[:args]``, loaded as ml_collections' config flag loads it."""
    path, *args = spec.split(":", 1)
    module_spec = importlib.util.spec_from_file_location("jaxprune_config_keys", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(*args)


def missing_key(config, key: str) -> str | None:
    """None if the dotted ``key`` is in ``config``; else why not, with the closest keys it has (difflib)."""
    node, path = config, []
    for part in key.split("."):
        here = ".".join(path) or "the config"
        if not isinstance(node, (ml_collections.ConfigDict, dict)):
            return f"{here} is a {type(node).__name__}, not a config with key {part!r}"
        if part not in node:
            known = [".".join([*path, k]) for k in node.keys()]
            close = difflib.get_close_matches(".".join([*path, part]), known, n=3)
            hint = (f"did you mean {', '.join(close[:-1]) + ' or ' if close[1:] else ''}{close[-1]}?" if close
                    else "no key is close; the config file lists them")
            return f"{here} has no key {part!r}; {hint}"
        node, path = node[part], [*path, part]
    return None


def unknown_override(argv: list[str]) -> str | None:
    """One line for the first ``--config.KEY=...`` of ``argv`` whose KEY the config file lacks, else None (also when
    the file itself does not load: the caller reports the original error)."""
    spec = _config_file(argv)
    try:
        config = _load_config(spec) if spec else None
    except Exception:  # a broken config file: not a key problem
        return None
    for arg in argv:
        override = re.match(r"--?(?:no)?config\.([^=]+)", arg)
        problem = override and config is not None and missing_key(config, override.group(1))
        if problem:
            return f"{arg.split('=', 1)[0]}: {problem}"
    return None


def validate(config) -> object:
    """The experiment module for ``config.experiment``, after checking every key (raises ConfigError)."""
    from jaxprune.experiments import REGISTRY

    if config.get("experiment") not in REGISTRY:
        raise ConfigError(f"config.experiment={config.get('experiment')!r}: must be one of {', '.join(REGISTRY)}")
    config_lib.validate_common(config)
    parallel.check_num_seeds(config.num_seeds, parallel.seed_mesh())
    experiment = REGISTRY[config.experiment]
    per_seed = [name for name, module in REGISTRY.items() if getattr(module, "DATA_PER_SEED", False)]
    if config.get("data_per_seed") and config.experiment not in per_seed:
        raise ConfigError(f"config.data_per_seed=True: experiment {config.experiment!r} shares one dataset between "
                          f"its seeds; the experiments that draw one per seed: {', '.join(per_seed)}")
    experiment.validate(config)
    return experiment


def check_workdir(workdir: str, config_dict: dict, overwrite: bool) -> bool:
    """True if ``workdir`` already holds a finished run of this config (nothing to do)."""
    wd.check_writable(workdir)
    config_path = os.path.join(workdir, wd.CONFIG)
    if overwrite or not os.path.exists(config_path):
        return False
    previous = wd.read_json(config_path)
    what = lambda c: {k: v for k, v in c.items() if k not in RUN_KEYS}  # noqa: E731
    diffs = wd.config_differences(what(previous), what(config_dict))
    if diffs:
        raise ConfigError(
            f"--workdir={workdir} holds a run of a different config ({'; '.join(diffs)}); "
            "use another --workdir or --config.overwrite=True"
        )
    return os.path.exists(os.path.join(workdir, wd.RESULTS))


def clear_outputs(workdir: str) -> None:
    """Remove the files and checkpoints a previous run wrote into ``workdir`` (for ``--config.overwrite``)."""
    for directory in (wd.CHECKPOINTS, metrics.TENSORBOARD):
        shutil.rmtree(os.path.join(workdir, directory), ignore_errors=True)
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if os.path.isfile(path) and (name in (wd.CONFIG, wd.RESULTS, wd.METRICS) or name.endswith((".npz", ".png"))):
            os.remove(path)


def chosen_workdir(config) -> str | None:
    """``--workdir``, else ``runs/<experiment>`` (None without a config)."""
    return _WORKDIR.value or (config and os.path.join("runs", str(config.get("experiment"))))


def interrupted(workdir: str | None) -> str:
    """The one line a run stopped by Ctrl-C ends with: what rerunning the same command will do."""
    directory = os.path.join(workdir, wd.CHECKPOINTS) if workdir else None
    saved = directory and any(name.isdigit() for _, dirs, _ in os.walk(directory) for name in dirs)
    return ("jaxprune: interrupted; rerun the same command to resume from the last checkpoint under "
            f"{directory}" if saved else "jaxprune: interrupted before any checkpoint; rerun the same command to "
            "start again")


def main(argv: list[str]) -> None:
    """The CLI: the run of ``--config`` into ``--workdir``; Ctrl-C ends it with one line and exit code 130."""
    try:
        run_main(argv)
    except KeyboardInterrupt:
        print(interrupted(chosen_workdir(_CONFIG.value)), file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)  # at once: no atexit hooks of background threads (orbax, JAX) to print their tracebacks


def run_main(argv: list[str]) -> None:
    logging.set_verbosity(logging.ERROR)  # keep stderr for our one-line errors; progress goes to stdout
    pylogging.getLogger("jax._src.callback").setLevel(pylogging.CRITICAL)  # a callback's error is re-raised, reported
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if config is None:
        _fail("--config is required, e.g. --config=configs/irp.py")
    try:
        config.get("experiment")  # config_flags reports a file it could not load only on first use
    except OSError as e:
        _fail(f"--config: {' '.join(str(e).split())}")
    config_lib.resolve_seed_ids(config)
    num_seeds = config.get("num_seeds")
    if isinstance(num_seeds, int) and num_seeds >= 1:
        processes = _NUM_PROCESSES.value or 1
        parallel.use_cpu_cores(max(num_seeds // processes, 1), cores=_CPU_DEVICES.value or None)  # CPU only
    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    parallel.enable_compilation_cache()
    try:
        experiment = validate(config)
        workdir = chosen_workdir(config)
        config_dict = wd.to_jsonable(config.to_dict())
        if check_workdir(workdir, config_dict, config.overwrite):
            print(f"jaxprune: {workdir} already holds the finished run of this config "
                  f"(results.json); rerun with --config.overwrite=True to recompute.", flush=True)
            return
        created = not os.path.exists(workdir)
        if parallel.is_primary():  # the only process that writes, and holds the workdir while it runs
            os.makedirs(workdir, exist_ok=True)
            wd.hold(workdir)
    except ConfigError as e:
        _fail(str(e))
    run_in(workdir, experiment, config, config_dict, created)


def callback_config_error(error: BaseException) -> str | None:
    """The message of a ConfigError raised inside a host callback of a compiled program (NPB's solver,
    ``jax.pure_callback``), which reaches Python as a JaxRuntimeError quoting it; None for any other error."""
    found = re.findall(rf"^(?:{re.escape(ConfigError.__module__)}\.)?ConfigError: (.+)$", str(error), re.M)
    return found[-1].strip() if found else None


def run_in(workdir: str, experiment, config, config_dict: dict, created: bool) -> None:
    """Run ``experiment`` into ``workdir`` (held by this process): config.json first, results.json last."""
    had_config = os.path.exists(os.path.join(workdir, wd.CONFIG))
    if parallel.is_primary():
        if config.overwrite:
            clear_outputs(workdir)
        wd.write_json(os.path.join(workdir, wd.CONFIG), config_dict)
    devices = parallel.device_summary()
    if parallel.is_primary():
        print(f"jaxprune: {config.num_seeds} seeds over {devices['devices']} {devices['platform']} device(s) in "
              f"{devices['processes']} process(es)", flush=True)
    try:
        results = experiment.run(config, workdir)
    except (ConfigError, jax.errors.JaxRuntimeError) as e:  # found while running: leave the workdir as it was
        reason = str(e) if isinstance(e, ConfigError) else callback_config_error(e)
        if reason is None:
            raise
        if parallel.is_primary() and not had_config:
            os.remove(os.path.join(workdir, wd.CONFIG))
        if parallel.is_primary() and created and set(os.listdir(workdir)) <= {wd.LOCK}:
            shutil.rmtree(workdir)
        _fail(reason)
    except AllSeedsFailed as e:
        _fail(str(e), code=1)
    if parallel.is_primary():
        wd.write_json(os.path.join(workdir, wd.RESULTS),
                      {**results, "seed_ids": config_lib.seed_ids(config), "devices": devices})


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
