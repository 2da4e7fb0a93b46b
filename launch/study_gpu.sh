#!/usr/bin/env bash
# The locality study of RESULTS.md (launch/sweeps/study.py and the 3-FC row)
# on one GPU, all nine runs at once, then its report.
#
#   bash launch/study_gpu.sh WORKDIR_ROOT [EPOCHS] [SECONDS] [-- EXTRA...]
#
# EPOCHS (default 400, ten times the CPU study's 40) sets the budget, with an
# eval every EPOCHS/10. SECONDS (default: none) stops the runs with SIGTERM
# after that long: each saves a checkpoint, and the same command resumes
# them. EXTRA go to every run, e.g. --config.data_file=cifar10.npz on a host
# without TensorFlow. The report goes to WORKDIR_ROOT/report.
set -euo pipefail
root=${1:?usage: launch/study_gpu.sh WORKDIR_ROOT [EPOCHS] [SECONDS] [-- EXTRA...]}
epochs=${2:-400}
seconds=${3:-0}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
every=$(python3 -c "print($epochs / 10)")
args=(--config.num_epochs="$epochs" --config.eval_every_epochs="$every"
      --config.checkpoint_every_epochs="$every" "$@")
limit=()
[ "$seconds" != 0 ] && limit=(timeout -s TERM "$seconds")
mkdir -p "$root"
# Nine processes share the GPU: each takes memory as it needs it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
"${limit[@]}" python3 -m beta_lasso.main --config=configs/study.py:3fc \
    --workdir="$root/3fc" "${args[@]}" > "$root/3fc.log" 2>&1 &
"${limit[@]}" python3 -m launch.sweep --sweep=launch/sweeps/study.py \
    --workdir_root="$root" --parallel=8 -- "${args[@]}" || true
wait || true
python3 -m beta_lasso.report --workdirs="$root/*" --out="$root/report"
