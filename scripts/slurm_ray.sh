#!/usr/bin/env bash
# Ray inside a SLURM allocation: a head on the first node, a worker on every other node, then
# `sonieval run PROTOCOL --engine ray` from this batch script (the driver, the only ledger writer).
#
#   sbatch --nodes=4 --gpus-per-node=4 --cpus-per-task=32 scripts/slurm_ray.sh protocols/thesis.yaml
#   sbatch ... scripts/slurm_ray.sh protocols/thesis.yaml --only train sonify    # extra `sonieval run` options
#
# Needs: the repository and its environment (.venv, or SONIEVAL_VENV) at the same path on every node, and
# the protocol's results_dir on storage every node sees at the same path (the workers write the artifacts
# there, the driver records them). Ray's token authentication reads ~/.ray/auth_token on every node: with a
# shared home this just works; otherwise copy the head's token to the workers before they join.
# A job that ends early (time limit, node failure) is resumed by submitting it again: finished items are
# skipped, under this engine or the local one.
#
#SBATCH --job-name=sonieval-ray
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --output=sonieval-ray-%j.out
set -euo pipefail

PROTOCOL=${1:?usage: sbatch [SLURM options] scripts/slurm_ray.sh PROTOCOL [sonieval run options]}
shift
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
VENV=${SONIEVAL_VENV:-.venv}
PORT=${RAY_PORT:-6379}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}  # every node and the driver present the cluster's token
CPUS=${SLURM_CPUS_PER_TASK:-$(nproc)}
GPUS=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || echo 0)

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD=${NODES[0]}
HEAD_IP=$(srun --nodes=1 --ntasks=1 -w "$HEAD" hostname --ip-address | awk '{print $1}')

echo "ray head on $HEAD ($HEAD_IP:$PORT), ${#NODES[@]} node(s), $CPUS CPUs and $GPUS GPUs per node"
srun --nodes=1 --ntasks=1 -w "$HEAD" \
  "$VENV/bin/ray" start --head --node-ip-address="$HEAD_IP" --port="$PORT" \
  --num-cpus="$CPUS" --num-gpus="$GPUS" --include-dashboard=false --block &
sleep 15  # the head answers before the workers dial in
for node in "${NODES[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
    "$VENV/bin/ray" start --address="$HEAD_IP:$PORT" --num-cpus="$CPUS" --num-gpus="$GPUS" --block &
done
sleep 15

status=0
"$VENV/bin/sonieval" run "$PROTOCOL" --engine ray --address "$HEAD_IP:$PORT" "$@" || status=$?
# the `ray start --block` steps end with the allocation; ending them here frees the nodes at once
kill $(jobs -p) 2>/dev/null || true
wait || true
exit "$status"
