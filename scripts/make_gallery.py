"""Run every experiment's default config and collect its PNG figures for the gallery (docs/gallery.md).

    python scripts/make_gallery.py                  # all experiments -> runs/gallery/<name>, docs/gallery/
    python scripts/make_gallery.py --only irp       # one experiment
    python scripts/make_gallery.py --quick          # tiny overrides, a smoke test (-> runs/gallery_quick/)

Each experiment runs through the CLI, ``python -m jaxprune.main --config=configs/<name>.py
--workdir=<runs>/<name> [overrides]``, in a subprocess from the repository root; the command is printed before it
runs. A workdir that already holds the finished run of the same command is reused (the CLI says so). Its figures
``<runs>/<name>/<figure>.png`` are then copied to ``<out>/<name>-<figure>.png`` (experiment names hold no '-', so
the prefix is unambiguous), after removing that experiment's old figures there. At the end a markdown snippet
(each image with the command that made it, image paths relative to docs/) is printed for docs/gallery.md.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from jaxprune.experiments import REGISTRY  # noqa: E402

PRESETS = ("nfp_fig1a", "nfp_fig2", "nfp_fig4")  # paper presets (configs/<name>.py) run beside the defaults
# Experiments with a default config of their own name (configs/<name>.py); the others run through a preset.
DEFAULTS = tuple(n for n in sorted(REGISTRY) if os.path.exists(os.path.join(REPO, "configs", f"{n}.py")))

# --quick: tiny settings shared by every experiment, then each experiment's own (keys of configs/<name>.py).
QUICK_COMMON = {"num_seeds": 2, "epochs": 1, "num_examples": 128, "num_test": 64, "widths": (16,)}
QUICK = {
    "irp": {"rounds": 2},
    "pai": {"methods": ("random", "snip", "imp"), "sparsities": (0.5, 0.8), "synflow_rounds": 2},
    "memorization": {"methods": ("imp", "snip", "random"), "sparsities": (0.5, 0.8), "max_epochs": 2,
                     "min_epochs": 0, "prune_fraction": 0.5},
    "noise_correlation": {"methods": ("imp", "snip", "random"), "sparsities": (0.5,), "max_epochs": 2,
                          "min_epochs": 0, "prune_fraction": 0.5},
    "mutual_information": {"methods": ("snip", "imp"), "sparsity": 0.5, "num_draws": 2, "repeats": 2,
                           "num_folds": 2, "num_permutations": 1, "prune_fraction": 0.5, "batch_size": 16,
                           "noise_masks": 8, "noise_bits": 16, "noise_methods": ("snip", "imp"),
                           "capacity_methods": ("snip", "imp"), "max_epochs": 2, "min_epochs": 0},
    "nfp_fig1a": {"num_seeds": 2, "methods": ("imp", "snip", "random"), "sparsities": (0.5, 0.8), "max_epochs": 2,
                  "min_epochs": 0, "prune_fraction": 0.5},
    "nfp_fig2": {"num_examples": 64, "num_test": 8, "input_dim": 8, "teacher_widths": (8,), "widths": (16, 16),
                 "batch_size": 32, "rounds": 2, "epochs": 2},
    "nfp_fig4": {"num_seeds": 1, "num_examples": 3, "widths": (2,), "num_datasets": 64, "sample_sizes": (16, 64),
                 "train_steps": 5, "synflow_rounds": 2},
    "autosparse": {"rounds": 2, "predictor_steps": 5, "predictor_batch_size": 256, "methods": ("random", "snip"),
                   "ablations": (), "transfer_targets": (), "sparsities": (0.5,)},
}


def command(name: str, runs_dir: str, quick: bool) -> list[str]:
    """The CLI command that runs ``name``'s default config (with the --quick overrides) into ``runs_dir/name``."""
    overrides = {**QUICK_COMMON, **QUICK.get(name, {})} if quick else {}
    return ["python", "-m", "jaxprune.main", f"--config=configs/{name}.py",
            f"--workdir={os.path.join(runs_dir, name)}",
            *(f"--config.{key}={value!r}" for key, value in overrides.items())]


def shell_line(cmd: list[str]) -> str:
    """``cmd`` as one shell line: a word with shell syntax in its value is written ``--flag="value"`` (values are
    Python literals without double quotes, backslashes, ``$`` or backticks, so this is exact)."""
    def word(arg: str) -> str:
        if re.fullmatch(r"[\w./=:,+-]+", arg):
            return arg
        flag, _, value = arg.partition("=")
        assert not re.search(r'["\\$`]', value), arg
        return f'{flag}="{value}"'

    return " ".join(map(word, cmd))


def collect(name: str, workdir: str, out_dir: str) -> list[str]:
    """Copy ``workdir``'s PNG figures to ``out_dir/<name>-<figure>.png`` (old ones of ``name`` removed first)."""
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(os.path.join(out_dir, f"{name}-*.png")):
        os.remove(old)
    copied = []
    for figure in sorted(glob.glob(os.path.join(workdir, "*.png"))):
        target = os.path.join(out_dir, f"{name}-{os.path.basename(figure)}")
        shutil.copyfile(figure, target)
        copied.append(target)
    return copied


def run(name: str, runs_dir: str, out_dir: str, quick: bool) -> tuple[str, list[str]]:
    """Run one experiment through the CLI (raises CalledProcessError on failure); (command, copied figures)."""
    cmd = command(name, runs_dir, quick)
    printed = shell_line(cmd)
    print(f"$ {printed}", flush=True)
    subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, check=True)
    return printed, collect(name, os.path.join(REPO, runs_dir, name), out_dir)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(DEFAULTS + PRESETS), help="run only this experiment or preset")
    parser.add_argument("--quick", action="store_true", help="tiny overrides for a smoke test")
    parser.add_argument("--runs", help="workdirs root, relative to the repository root "
                                       "(default runs/gallery, or runs/gallery_quick with --quick)")
    parser.add_argument("--out", help="where the figures go (default docs/gallery, or "
                                      "runs/gallery_quick/figures with --quick)")
    args = parser.parse_args(argv)
    default_root = "runs/gallery_quick" if args.quick else "runs/gallery"
    args.runs = args.runs or default_root
    args.out = os.path.abspath(args.out) if args.out else os.path.join(
        REPO, f"{default_root}/figures" if args.quick else "docs/gallery")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    snippet = []
    for name in [args.only] if args.only else DEFAULTS + PRESETS:
        try:
            printed, figures = run(name, args.runs, args.out, args.quick)
        except subprocess.CalledProcessError as e:
            print(f"make_gallery: {name} failed with exit code {e.returncode}", file=sys.stderr)
            return 1
        print(f"{name}: {len(figures)} figures -> {args.out}", flush=True)
        docs = os.path.join(REPO, "docs")  # the snippet's image paths are relative to docs/gallery.md
        snippet += [f"```\n{printed}\n```"] + [f"![{name}]({os.path.relpath(f, docs)})" for f in figures]
    print("\n".join(snippet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
