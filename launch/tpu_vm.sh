#!/usr/bin/env bash
# Runs this repository on every worker of a Cloud TPU VM: one host (v4-8) or a
# multi-host pod slice (v4-32, ...), where the same command must start on every
# worker at once.
#
# Usage (from the repository root; settings are environment variables):
#   TPU_NAME=bl launch/tpu_vm.sh create
#   TPU_NAME=bl launch/tpu_vm.sh install
#   TPU_NAME=bl launch/tpu_vm.sh train CONFIG WORKDIR [MAIN_FLAGS...]
#   TPU_NAME=bl launch/tpu_vm.sh sweep SWEEP_FILE WORKDIR_ROOT [SWEEP_FLAGS...]
#   TPU_NAME=bl launch/tpu_vm.sh ssh 'COMMAND'
#   TPU_NAME=bl launch/tpu_vm.sh delete
#
#   create   gcloud compute tpus tpu-vm create, with ACCELERATOR_TYPE and
#            RUNTIME_VERSION.
#   install  copies this working tree (tracked and untracked, not ignored
#            files) to ~/REMOTE_DIR on every worker, then pip installs
#            jax[tpu] and the repository.
#   train    python -m beta_lasso.main --config=CONFIG --workdir=WORKDIR
#            --jax_distributed MAIN_FLAGS on every worker.
#   sweep    python -m launch.sweep --sweep=SWEEP_FILE
#            --workdir_root=WORKDIR_ROOT SWEEP_FLAGS on every worker, each
#            run with --jax_distributed; then the summary once more on
#            worker 0 (see launch/README.md).
#   ssh      any command on every worker, run in ~/REMOTE_DIR.
#   delete   deletes the TPU VM.
#
# WORKDIR and WORKDIR_ROOT should be gs:// paths: on a pod slice every worker
# writes its part of each checkpoint there, and a gs:// workdir survives the
# VM. Running the same train or sweep command again resumes it.
#
# Examples:
#   TPU_NAME=bl launch/tpu_vm.sh train configs/sfc_beta_lasso.py gs://BUCKET/bl
#   TPU_NAME=bl launch/tpu_vm.sh sweep launch/sweeps/table2.py \
#       gs://BUCKET/sweeps/table2 -- --config.dataset=cifar100
set -euo pipefail

TPU_NAME="${TPU_NAME:-}"                              # Required.
ZONE="${ZONE:-us-central2-b}"
PROJECT="${PROJECT:-}"                                # Empty: gcloud's default.
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"          # v4-32 and up: pods.
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
REMOTE_DIR="${REMOTE_DIR:-beta_lasso}"                # Under each home dir.
# jax.distributed.initialize() finds the other workers by itself on Cloud TPU;
# it is needed on a pod slice and harmless on one host. 0 leaves it out.
JAX_DISTRIBUTED="${JAX_DISTRIBUTED:-1}"
# TFDS data dir, e.g. gs://BUCKET/tensorflow_datasets. Empty: each worker
# downloads the dataset to its own ~/tensorflow_datasets on first use.
DATA_DIR="${DATA_DIR:-}"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# gcloud compute tpus tpu-vm SUBCOMMAND ... in ZONE (and PROJECT, when set).
tpu_vm() {
  local subcommand="$1"
  shift
  gcloud compute tpus tpu-vm "${subcommand}" "$@" --zone="${ZONE}" \
    ${PROJECT:+"--project=${PROJECT}"}
}

# Quotes each argument for any POSIX shell, as 'it'\''s', joined by spaces.
# The command runs in the remote user's login shell, which need not be bash:
# printf %q writes a newline as $'\n', which sh reads as a literal $ and n.
sh_quote() {
  local arg quoted=()
  for arg in "$@"; do
    quoted+=("'${arg//\'/\'\\\'\'}'")
  done
  printf '%s ' "${quoted[@]}"
}

# Runs a shell command in ~/REMOTE_DIR on the given workers ('all' or an index).
on_workers() {
  local workers="$1" command="$2" prefix
  prefix="cd $(sh_quote "${REMOTE_DIR}")"
  if [[ -n "${DATA_DIR}" ]]; then
    prefix+=" && export TFDS_DATA_DIR=$(sh_quote "${DATA_DIR}")"
  fi
  tpu_vm ssh "${TPU_NAME}" --worker="${workers}" \
    --command="${prefix} && ${command}"
}

warn_if_local() {
  if [[ "$1" != gs://* ]]; then
    echo "warning: $1 is not a gs:// path; on a pod slice every worker needs" \
      "the same workdir, and a local one is lost with the VM" >&2
  fi
}

create() {
  tpu_vm create "${TPU_NAME}" --accelerator-type="${ACCELERATOR_TYPE}" \
    --version="${RUNTIME_VERSION}"
}

install() {
  local root tmp tarball remote_dir
  root="$(cd "$(dirname "$0")/.." && pwd)"
  tmp="$(mktemp -d)"
  tarball="${tmp}/beta_lasso.tgz"
  # The working tree as it is, uncommitted edits included, without ignored
  # build outputs or data.
  git -C "${root}" ls-files -z --cached --others --exclude-standard \
    | tar -C "${root}" --null -T - -czf "${tarball}"
  tpu_vm scp "${tarball}" "${TPU_NAME}:beta_lasso.tgz" --worker=all
  rm -rf "${tmp}"
  remote_dir="$(sh_quote "${REMOTE_DIR}")"
  # jax[tpu] first, so that requirements.txt's plain jax is already satisfied
  # by the TPU build.
  tpu_vm ssh "${TPU_NAME}" --worker=all --command="set -e
    mkdir -p ${remote_dir} && tar -xzf beta_lasso.tgz -C ${remote_dir}
    cd ${remote_dir}
    python3 -m pip install -U 'jax[tpu]'
    python3 -m pip install -r requirements.txt -e .
    python3 -c 'import jax; print(\"jax\", jax.__version__)'"
}

train() {
  [[ $# -ge 2 ]] || usage
  local config="$1" workdir="$2"
  shift 2
  warn_if_local "${workdir}"
  local args=(python3 -m beta_lasso.main "--config=${config}"
              "--workdir=${workdir}")
  if [[ "${JAX_DISTRIBUTED}" == 1 ]]; then
    args+=(--jax_distributed)
  fi
  on_workers all "$(sh_quote "${args[@]}" "$@")"
}

sweep() {
  [[ $# -ge 2 ]] || usage
  local sweep_file="$1" root="$2"
  shift 2
  warn_if_local "${root}"
  # SWEEP_FLAGS are launch.sweep's own flags, then `--` and what goes to every
  # run; --jax_distributed joins the latter.
  local flags=() extra=()
  while [[ $# -gt 0 && "$1" != -- ]]; do
    flags+=("$1")
    shift
  done
  if [[ $# -gt 0 ]]; then
    shift
    extra=("$@")
  fi
  if [[ "${JAX_DISTRIBUTED}" == 1 ]]; then
    extra+=(--jax_distributed)
  fi
  # ${a[@]+"${a[@]}"}: an empty array under set -u on bash < 4.4 (macOS).
  local args=(python3 -m launch.sweep "--sweep=${sweep_file}"
              "--workdir_root=${root}" ${flags[@]+"${flags[@]}"})
  local status=0
  on_workers all "$(sh_quote "${args[@]}" -- ${extra[@]+"${extra[@]}"})" \
    || status=$?
  # Every worker prints a summary, but only process 0 writes results.json, so
  # another worker can read the last run's before it exists. Worker 0's view,
  # read after everything has finished, is the one to keep.
  on_workers 0 "$(sh_quote "${args[@]}" --summary_only -- \
    ${extra[@]+"${extra[@]}"})" || true
  return "${status}"
}

main() {
  [[ $# -ge 1 ]] || usage
  if [[ -z "${TPU_NAME}" ]]; then
    echo "error: set TPU_NAME, e.g. TPU_NAME=bl $0 $*" >&2
    exit 2
  fi
  local action="$1"
  shift
  case "${action}" in
    create) create ;;
    install) install ;;
    train) train "$@" ;;
    sweep) sweep "$@" ;;
    ssh) [[ $# -ge 1 ]] || usage; on_workers all "$*" ;;
    delete) tpu_vm delete "${TPU_NAME}" --quiet ;;
    *) usage ;;
  esac
}

main "$@"
