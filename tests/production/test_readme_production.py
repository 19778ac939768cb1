"""Every command of the README's "Running in production" section runs (issue 7 acceptance: "every
command in it is tested").

Each ```sh block of the section runs in a fresh bash (``set -euo pipefail``), in one working
directory shared by the blocks, with ``.venv/bin`` on ``PATH``. Only these stand-ins change:
the database URLs become the test's PostgreSQL database, ``0.0.0.0`` becomes ``127.0.0.1``, the
ports 8000 and 9100 become free ones. A ``gatehouse serve`` line runs in the background until its
block ends (a shell function wraps it and waits for ``/readyz``), so the lines after it talk to it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path


from tests.conftest import missing_component
from tests.production.harness import free_port, gatehouse_env

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Running in production"
README_DATABASE_URL = "postgresql+psycopg://gatehouse@db.internal:5432/gatehouse"
README_LIBPQ_URL = "postgresql://gatehouse@db.internal:5432/gatehouse"

PRELUDE = r"""
set -euo pipefail
__serve_pids=()
__stop_servers() {
  for pid in "${__serve_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
trap __stop_servers EXIT
__wait_ready() {
  local -; set +x
  for _ in $(seq 1 900); do
    kill -0 "$1" 2>/dev/null || { echo "gatehouse serve exited; see $README_TEST_SERVE_LOG" >&2; return 1; }
    curl -fsS -o /dev/null "http://127.0.0.1:$README_TEST_PORT/readyz" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "gatehouse serve did not become ready" >&2
  return 1
}
gatehouse() {
  { local -; set +x; } 2>/dev/null
  if [ "${1:-}" = serve ]; then
    command gatehouse "$@" >>"$README_TEST_SERVE_LOG" 2>&1 &
    __serve_pids+=("$!")
    __wait_ready "$!"
  else
    command gatehouse "$@"
  fi
}
set -x
"""

#: what a block that runs the command must print (stdout and stderr together)
EXPECTED_OUTPUT = [
    ("gatehouse db upgrade", "Database is up to date."),
    ("/readyz", '"store":{"status":"ok"'),
    ("/metrics", "gatehouse_http_requests_total{"),
    ("gatehouse keys rotate", "is published now and signs from"),
    ("gatehouse keys list", "retires after"),
    (".dump\"", "Wrote a postgresql backup"),
    (".db\"", "Wrote a sqlite backup"),
    ("gatehouse db check", "The database is ready to serve."),
    ("gatehouse db purge", "Retention (3600 s after expiry): purged"),
]


def production_blocks() -> list[str]:
    text = README.read_text()
    assert SECTION in text, "README.md has no 'Running in production' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def localised(block: str, database_url: str, port: int, admin_port: int) -> str:
    block = block.replace(README_DATABASE_URL, database_url)
    block = block.replace(README_LIBPQ_URL, database_url.replace("postgresql+psycopg://", "postgresql://"))
    block = block.replace("--host 0.0.0.0", "--host 127.0.0.1")
    block = re.sub(r"\b8000\b", str(port), block)
    return re.sub(r"\b9100\b", str(admin_port), block)


def run_block(script: str, cwd: Path, env: dict, timeout: float = 300) -> tuple[int, str]:
    """Run one block in its own session, so that on a timeout everything it started is killed with it."""
    process = subprocess.Popen(["bash", "-c", PRELUDE + script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return -1, output + f"\n(timed out after {timeout:g} s)"
    return process.returncode, output


def test_the_section_covers_what_production_needs():
    blocks = production_blocks()
    commands = "\n".join(blocks)
    for needed in ("--issuer https://", "--forwarded-allow-ips", "--workers", "GATEHOUSE_DATABASE_URL", "GATEHOUSE_SECRET_KEY",
                   "gatehouse keys rotate", "gatehouse db backup", "pg_restore", "gatehouse db check", "/readyz", "/metrics",
                   "--admin-port", "--log-format json", "GATEHOUSE_METRICS_TOKEN", "gatehouse db purge"):
        assert needed in commands, f"no command in the section uses {needed}"
    for stand_in in (README_DATABASE_URL, README_LIBPQ_URL, "--host 0.0.0.0"):
        assert stand_in in commands, f"{stand_in} is no longer in the README: update this test's stand-ins"


def test_every_command_of_the_section_runs(tmp_path, postgres_url):
    for tool in ("curl", "pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            missing_component(f"{tool} is needed to run the README's production commands")
    port, admin_port = free_port(), free_port()
    serve_log = tmp_path / "serve.log"
    workdir = tmp_path / "deployment"
    workdir.mkdir()
    env = gatehouse_env(None, None, {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "README_TEST_PORT": str(port),
        "README_TEST_SERVE_LOG": str(serve_log),
    })

    blocks = production_blocks()
    assert len(blocks) >= 8
    for number, block in enumerate(blocks, 1):
        script = localised(block, postgres_url, port, admin_port)
        status, output = run_block(script, workdir, env)
        assert status == 0, f"README production block {number} failed (exit {status}):\n{block}\n--- output ---\n{output}"
        for command, expected in EXPECTED_OUTPUT:
            if command in block:
                assert expected in output, f"block {number}: `{command}` did not print {expected!r}:\n{output}"

    # the instances ran with --log-format json: their log lines are JSON objects
    json_lines = [line for line in serve_log.read_text().splitlines() if line.startswith("{")]
    assert json_lines and all(isinstance(json.loads(line), dict) for line in json_lines)
    assert (workdir / ".gatehouse" / "gatehouse.db").is_file() and list((workdir / "backups").glob("gatehouse-*.dump"))
