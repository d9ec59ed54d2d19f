"""First-run time of the README quickstart: total wall, the share spent tracing, lowering and compiling, and the
number of XLA programs compiled, from a COLD compilation cache, for several CPU layouts side by side in one run.

Each variant runs ``python -m jaxprune.main --config=configs/irp.py --workdir=<fresh>`` (plus its flags) in a
subprocess with an empty ``JAXPRUNE_CACHE_DIR``; a small hook in that process sums JAX's own duration events
(``/jax/core/compile/jaxpr_trace_duration``, ``.../jaxpr_to_mlir_module_duration``,
``.../backend_compile_duration``) and counts the backend compiles. ``--repo`` may name another checkout (e.g. a
``git worktree`` of an older commit) to measure it the same way: the "before" column of benchmarks/README.md.

    python benchmarks/bench_first_run.py                                   # default layout and --cpu_devices=1
    python benchmarks/bench_first_run.py --repo /path/to/old/checkout --variants default
    python benchmarks/bench_first_run.py --smoke                           # tiny overrides, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HOOK = r"""
import atexit, json, os, runpy, sys, time
import jax
from jax._src import dispatch
totals = {"trace": 0.0, "lower": 0.0, "compile": 0.0, "programs": 0}
names = {dispatch.JAXPR_TRACE_EVENT: "trace", dispatch.JAXPR_TO_MLIR_MODULE_EVENT: "lower",
         dispatch.BACKEND_COMPILE_EVENT: "compile"}
def listen(event, duration, **kwargs):
    if event in names:
        totals[names[event]] += duration
        totals["programs"] += event == dispatch.BACKEND_COMPILE_EVENT
jax.monitoring.register_event_duration_secs_listener(listen)
atexit.register(lambda: print("BENCH " + json.dumps(totals), flush=True))
sys.argv = ["jaxprune.main"] + sys.argv[1:]
runpy.run_module("jaxprune.main", run_name="__main__")
"""
VARIANTS = {"default": [], "cpu_devices=1": ["--cpu_devices=1"]}
SMOKE = ["--config.rounds=2", "--config.epochs=1", "--config.num_seeds=2", "--config.widths=(16,)"]


def measure(repo: str, flags: list[str]) -> dict:
    """Wall seconds and the hook's totals of one cold-cache quickstart run in ``repo``."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu", JAXPRUNE_CACHE_DIR=os.path.join(tmp, "cache"))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", HOOK, "--config=configs/irp.py",
                               f"--workdir={os.path.join(tmp, 'run')}", *flags], cwd=repo, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_first_run: the run failed in {repo}:\n{proc.stderr[-2000:]}")
    totals = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("BENCH "))[6:])
    devices = next((line.split("seeds over ")[1].split(" cpu")[0] for line in proc.stdout.splitlines()
                    if "seeds over" in line), "?")
    return {"wall": wall, "devices": devices, **totals}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--smoke", action="store_true", help="tiny overrides (a seconds-long check)")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}; repo {args.repo}")
    print("| variant | devices | wall s | trace s | lower s | compile s | compile share | programs compiled |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.variants:
        r = measure(args.repo, VARIANTS[name] + (SMOKE if args.smoke else []))
        share = (r["trace"] + r["lower"] + r["compile"]) / r["wall"]
        print(f"| {name} | {r['devices']} | {r['wall']:.1f} | {r['trace']:.1f} | {r['lower']:.1f} | "
              f"{r['compile']:.1f} | {share:.0%} | {r['programs']} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
