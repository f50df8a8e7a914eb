#!/usr/bin/env bash
# Runs `python -m sketchjax.main` on every worker of a Cloud TPU VM slice: one
# process per host, all started together by `gcloud ... ssh --worker=all`.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b [PROJECT=my-project] launch/tpu_pod.sh \
#       --config=configs/sketchxai_quickdraw.py --workdir=/mnt/shared/runs/qd \
#       [--config.x.y=v ...]
#
# Run it on your machine from anywhere inside the checkout. It copies the
# working tree (without .git, .venv, workdirs, .jax_cache) to ~/sketchjax on
# every worker, installs it with jax[tpu] into ~/sketchjax/.venv (Python >= 3.11;
# python3.11 comes from apt where the image has no newer Python), then starts
# the run with SKETCHJAX_MULTIHOST=1 so that sketchjax.main calls
# jax.distributed.initialize(), which reads the slice's workers from the TPU
# metadata. Every argument goes to sketchjax.main unchanged. The workdir and
# any data folder must be on a filesystem every worker sees (NFS, Filestore,
# a gcsfuse mount): checkpoints are written collectively by all hosts.
# The run ends when the ssh session does; keep your terminal (or tmux) open.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM slice name}"
: "${ZONE:?set ZONE to the slice zone, e.g. us-central2-b}"
gcloud_flags=(--zone="$ZONE")
if [[ -n "${PROJECT:-}" ]]; then gcloud_flags+=(--project="$PROJECT"); fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archive_dir="$(mktemp -d)"
trap 'rm -rf "$archive_dir"' EXIT
archive="$archive_dir/sketchjax.tar.gz"
tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./workdirs \
    --exclude=./.jax_cache --exclude=./.pytest_cache -czf "$archive" .

echo "tpu_pod.sh: copying the checkout to every worker of $TPU_NAME" >&2
gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME":sketchjax.tar.gz --worker=all \
    "${gcloud_flags[@]}"

read -r -d '' setup <<'EOF' || true
set -e
mkdir -p ~/sketchjax
tar -xzf ~/sketchjax.tar.gz -C ~/sketchjax
cd ~/sketchjax
if [ ! -x .venv/bin/python ]; then
  python3.12 -m venv --clear .venv 2>/dev/null || python3.11 -m venv --clear .venv 2>/dev/null || {
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
    python3.11 -m venv --clear .venv
  }
fi
. .venv/bin/activate
pip install -q -U pip
pip install -q -e . "jax[tpu]>=0.10,<0.11"
EOF

# Each argument quoted for the remote shell.
main_args="$(printf '%q ' "$@")"
run="cd ~/sketchjax && . .venv/bin/activate && SKETCHJAX_MULTIHOST=1 python -m sketchjax.main $main_args"

echo "tpu_pod.sh: installing on every worker" >&2
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all "${gcloud_flags[@]}" --command="$setup"
echo "tpu_pod.sh: starting on every worker: python -m sketchjax.main $main_args" >&2
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all "${gcloud_flags[@]}" --command="$run"
