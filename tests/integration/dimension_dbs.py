"""Real PostgreSQL and Redis servers for lookup-join tests.

Each test gets servers of its own (on free ports, data in a temporary
directory), so a test can stop and restart them mid-run. The binaries come
from Debian's packages (postgresql, redis-server), installed by .ci/run:

  STRATA_PG_BIN       directory of initdb / pg_ctl (default: the newest
                      /usr/lib/postgresql/*/bin)
  STRATA_REDIS_BIN    redis-server (default: from PATH)

PostgreSQL refuses to run as root; as root the server runs as the
`postgres` user the package creates.
"""

from __future__ import annotations

import glob
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import free_port, wait_until


def _pg_bin() -> pathlib.Path:
    given = os.environ.get("STRATA_PG_BIN")
    if given:
        return pathlib.Path(given)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not found:
        pytest.fail("PostgreSQL server binaries not found: apt-get install postgresql (scripts/test does)",
                    pytrace=False)
    return pathlib.Path(found[-1])


class Postgres:
    def __init__(self):
        self.bin = _pg_bin()
        # Not under pytest's tmp_path: that is private to root, and the
        # server may run as `postgres`.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="strata-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "Postgres":
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-l", str(self.dir / "log"),
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-m", "fast", "stop")

    def sql(self, text: str) -> str:
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-v", "ON_ERROR_STOP=1",
             "-qAt", "-f", "-"],
            input=text, check=True, capture_output=True, text=True)
        return out.stdout

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    def __init__(self, data_dir: pathlib.Path):
        self.binary = os.environ.get("STRATA_REDIS_BIN") or shutil.which("redis-server")
        if not self.binary:
            pytest.fail("redis-server not found: apt-get install redis-server (scripts/test does)", pytrace=False)
        self.dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/"

    def start(self) -> "Redis":
        """Starts an empty server (nothing is saved across restarts)."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.command("PING") == "PONG", 10, "redis to start")
        return self

    def command(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return out.stdout.strip()

    def load(self, commands: list[list[str]]) -> None:
        """Runs many commands in one redis-cli pipe."""
        def quote(a: str) -> str:
            return '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'
        text = "\n".join(" ".join(quote(a) for a in c) for c in commands) + "\n"
        subprocess.run(["redis-cli", "-p", str(self.port)], input=text, check=True,
                       capture_output=True, text=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def postgres():
    pg = Postgres().start()
    yield pg
    pg.close()


@pytest.fixture
def redis_server(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()
