#!/usr/bin/env bash
# GPU check, under 8 minutes on one accelerator: the seed benchmarks and one short IRP round of VGG-16 and
# ResNet-18 on CIFAR-shaped data made locally, printing seed-steps/s, % of the matmul peak measured in the same
# run and memory per seed. Run from the repository root on a machine with a GPU:
#
#     bash benchmarks/gpu_check.sh            # writes its tables to stdout and to ${OUT:-.}/gpu_check.md
#
# The GPU image may lack ml-collections and mnist1d (needed by bench_seeds.py and bench_irp_torch.py, not by
# bench_gpu_irp.py): wheels placed in .whl/ are installed first (see the device tool's README for how to download
# them). Each step has its own time limit, so one slow step cannot take the whole budget.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out="${OUT:-.}/gpu_check.md"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/jaxprune-site .whl/*.whl \
    && export PYTHONPATH="/tmp/jaxprune-site:${PYTHONPATH:-}"
fi
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
step() {  # step SECONDS TITLE COMMAND...
  local limit=$1 title=$2
  shift 2
  echo "## ${title}" | tee -a "$out"
  timeout "$limit" "$@" 2>&1 | tee -a "$out" || echo "(${title}: exit $?, see above)" | tee -a "$out"
}
: > "$out"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$out"
step 240 "IRP round, VGG-16 and ResNet-18 (bench_gpu_irp.py)" python3 benchmarks/bench_gpu_irp.py --seeds 1 8
step 120 "seeds vmapped vs a per-seed loop (bench_seeds.py)" python3 benchmarks/bench_seeds.py --seeds 1 8 32 --repeats 3
step 90 "IRP vs a PyTorch per-seed loop (bench_irp_torch.py)" python3 benchmarks/bench_irp_torch.py --repeats 1
