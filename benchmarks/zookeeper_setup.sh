#!/usr/bin/env bash
# Make the venv that benchmarks/zookeeper_board.py runs TaskFlow's ZooKeeper
# job board in. TaskFlow and kazoo stay out of aiojobboard's own dependencies:
# they live in .venv-taskflow at the repository's root, which other benchmarks
# share. Safe to run again, and while another process runs it: pip installs
# into the venv idempotently.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AIOJOBBOARD_TASKFLOW_VENV:-$root/.venv-taskflow}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi

if ! "$venv/bin/python" -c 'import taskflow, kazoo' 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check taskflow kazoo
fi

echo "$venv/bin/python"
