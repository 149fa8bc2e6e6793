#!/usr/bin/env bash
# Installs what the tests need and runs them on SQLite and on a real PostgreSQL.
# espeak-ng (the offline voice, used by the audio tests) is installed with apt-get
# where it is missing.
#
#   bash tests/run.sh [pytest arguments]
#
# PostgreSQL: uses VOICECRM_TEST_POSTGRES_URL when it is set; otherwise installs
# PostgreSQL with apt-get where it is missing (root only), starts the local
# cluster, and creates a role and database for the tests. It leaves a server it
# started running only until the tests end.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[test]'

# espeak-ng: the offline voice, and the speech the audio tests are made of.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "tests/run.sh: installing espeak-ng with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "tests/run.sh: espeak-ng is not installed; install it (apt-get install espeak-ng)" >&2
    exit 1
  fi
fi

started_cluster=""
cleanup() {
  if [ -n "$started_cluster" ]; then
    pg_ctlcluster $started_cluster stop || true
  fi
}
trap cleanup EXIT

if [ -z "${VOICECRM_TEST_POSTGRES_URL:-}" ]; then
  if ! command -v pg_lsclusters >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      echo "tests/run.sh: installing PostgreSQL with apt-get"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "tests/run.sh: PostgreSQL is not installed; install it or set VOICECRM_TEST_POSTGRES_URL" >&2
      exit 1
    fi
  fi
  read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
  if [ -z "${version:-}" ]; then
    pg_createcluster 15 main >/dev/null
    read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
  fi
  if [ "$status" != "online" ]; then
    pg_ctlcluster "$version" "$cluster" start
    started_cluster="$version $cluster"
  fi
  su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_roles WHERE rolname='voicecrm'\"" | grep -q 1 \
    || su postgres -c "psql -q -p $port -c \"CREATE ROLE voicecrm LOGIN CREATEDB PASSWORD 'voicecrm'\""
  # The benchmark checkpoints after bulk-loading, so that its figures are not a checkpoint's.
  su postgres -c "psql -q -p $port -c \"GRANT pg_checkpoint TO voicecrm\""
  export VOICECRM_TEST_POSTGRES_URL="postgresql+asyncpg://voicecrm:voicecrm@127.0.0.1:$port/postgres"
fi

# Static checks first: lint, formatting, and strict typing of the package, tests and benches.
if [ $# -eq 0 ]; then
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy
fi

# One test process per core (at most 4): much of the suite waits on real time (calls
# paced at 20 ms a frame, fake servers, subprocesses), and one process left a core
# idle. On two cores the suite took 3 min 55 s and 4 min 12 s in two processes,
# against 7 min 51 s in one. Arguments given after these override them (`-n 0`: one
# process, as for a single test under a debugger).
set +e
.venv/bin/python -m pytest -n auto --maxprocesses=4 "$@"
status=$?
set -e
exit $status

