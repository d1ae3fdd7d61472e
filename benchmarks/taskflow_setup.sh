#!/usr/bin/env bash
# Make the venv that the benchmarks run TaskFlow in, the reference they compare
# aiojobboard with: TaskFlow with the clients of its Redis and ZooKeeper job
# boards and of its SQLAlchemy persistence backend. They stay out of
# aiojobboard's own dependencies, in .venv-taskflow at the repository's root.
# Safe to run again, and while another benchmark runs it. Prints the venv's
# python.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AIOJOBBOARD_TASKFLOW_VENV:-$root/.venv-taskflow}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi

if ! "$venv/bin/python" -c 'import taskflow, redis, kazoo, sqlalchemy, psycopg2' \
    2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        taskflow redis kazoo SQLAlchemy psycopg2-binary alembic
fi

echo "$venv/bin/python"
