#!/usr/bin/env bash
# Runs a jaxprune experiment on a Cloud TPU VM: creates the VM unless it exists, copies this repository's
# committed tree to every worker, installs it with jax[tpu], and starts jaxprune.main on all workers at once
# (they join one JAX run through jaxprune.parallel.initialize). Needs bash >= 4.4 and an authenticated gcloud.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch_tpu.sh --name NAME --zone ZONE --config CONFIG --workdir WORKDIR [options] [-- OVERRIDES...]

Creates the TPU VM NAME in ZONE unless it exists, copies the committed tree of this repository (git archive
HEAD) to ~/jaxprune on every worker, runs pip install -e . "jax[tpu]" there, then runs on all workers
  python3 -m jaxprune.main --config=CONFIG --workdir=WORKDIR OVERRIDES...

Required:
  --name NAME               TPU VM name
  --zone ZONE               zone, e.g. us-central2-b
  --config CONFIG           config file relative to the repository root, e.g. configs/memorization.py
  --workdir WORKDIR         run directory on the workers (relative paths are under ~/jaxprune)
Options:
  --accelerator-type TYPE   TPU type (default v4-8)
  --version VERSION         TPU VM runtime version (default tpu-ubuntu2204-base, for v2-v4; v5e:
                            v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)
  --dry-run                 print every command instead of running it
  -h, --help                show this help
Everything after -- goes to jaxprune.main, e.g. -- --config.num_seeds=16
EOF
}

die() {
  echo "launch_tpu.sh: $*" >&2
  exit 2
}

# Prints its arguments as one line a POSIX shell splits back into them: safe words bare, others single-quoted
# (after the = of an --option=value word, so that it stays readable).
quote() {
  local words=() word prefix
  for word in "$@"; do
    prefix=''
    if [[ $word =~ ^--[[:alnum:]_.-]+= ]]; then
      prefix=${BASH_REMATCH[0]} word=${word#"${BASH_REMATCH[0]}"}
    fi
    if [[ ! $word =~ ^[[:alnum:]_./:=@%+,-]+$ ]]; then
      word="'${word//\'/\'\\\'\'}'"
    fi
    words+=("$prefix$word")
  done
  echo "${words[*]}"
}

# Runs a command, or prints it under --dry-run.
run() {
  if ((dry_run)); then quote "$@"; else "$@"; fi
}

name='' zone='' config='' workdir='' accelerator_type=v4-8 version=tpu-ubuntu2204-base dry_run=0
overrides=()
while (($#)); do
  case $1 in
    --name | --zone | --config | --workdir | --accelerator-type | --version)
      [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value (see --help)"
      option=${1#--} value=$2
      shift 2
      ;;
    --name=* | --zone=* | --config=* | --workdir=* | --accelerator-type=* | --version=*)
      option=${1%%=*} value=${1#*=}
      option=${option#--}
      shift
      ;;
    --dry-run) dry_run=1 && shift && continue ;;
    -h | --help) usage && exit 0 ;;
    --) shift && overrides=("$@") && break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  printf -v "${option//-/_}" '%s' "$value"
done
for option in name zone config workdir; do
  [[ -n ${!option} ]] || die "missing --$option (see --help)"
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tarball="${TMPDIR:-/tmp}/jaxprune-$name-$$.tar.gz"
remote_dir=jaxprune
tpu_vm=(gcloud compute tpus tpu-vm)
at_zone=(--zone="$zone")
describe=("${tpu_vm[@]}" describe "$name" "${at_zone[@]}")
create=("${tpu_vm[@]}" create "$name" "${at_zone[@]}" --accelerator-type="$accelerator_type" --version="$version")
install="mkdir -p $remote_dir && tar -xzf $remote_dir.tar.gz -C $remote_dir && cd $remote_dir"
install+=" && $(quote python3 -m pip install -e . 'jax[tpu]')"
main="cd $remote_dir && $(quote python3 -m jaxprune.main --config="$config" --workdir="$workdir" "${overrides[@]}")"

if ((dry_run)); then
  echo "$(quote "${describe[@]}") >/dev/null 2>&1 || $(quote "${create[@]}")"
elif "${describe[@]}" >/dev/null 2>&1; then
  echo "launch_tpu.sh: reusing TPU VM $name in $zone" >&2
else
  "${create[@]}"
fi
if [[ -n $(git -C "$repo" status --porcelain) ]]; then
  echo "launch_tpu.sh: warning: uncommitted changes in $repo are not copied (git archive HEAD)" >&2
fi
((dry_run)) || trap 'rm -f "$tarball"' EXIT
run git -C "$repo" archive --format=tar.gz --output="$tarball" HEAD
run "${tpu_vm[@]}" scp "$tarball" "$name:$remote_dir.tar.gz" "${at_zone[@]}" --worker=all
run "${tpu_vm[@]}" ssh "$name" "${at_zone[@]}" --worker=all --command="$install"
run "${tpu_vm[@]}" ssh "$name" "${at_zone[@]}" --worker=all --command="$main"
