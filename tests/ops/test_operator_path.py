"""The operator's path, from a wheel in a fresh virtualenv, outside the
repository: migrate, seed 20 overdue extensions, see them in ``status``, let a
worker resolve them, stop it with SIGTERM, migrate down.  SQLite and PostgreSQL.

Slow (it builds the wheel and installs it with its dependencies from the
package index) but part of CI: it is the only test that sees what a user
installs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.sql_support import private_postgres_database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = Path(__file__).with_name("seed_overdue.py")


class Installed:
    """A virtualenv with the wheel (and its ``postgres`` extra) installed."""

    def __init__(self, venv: Path, workdir: Path) -> None:
        self.bin = venv / "bin"
        self.workdir = workdir
        # Nothing of the repository or of the test run leaks in.
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "EXTENSION_FSM_", "VIRTUAL_ENV"))
        }
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert done.returncode == 0, (argv, done.stdout, done.stderr)
        return done

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("extension-fsm", *argv, check=check)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("operator")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (wheel,) = dist.glob("extension_fsm-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[postgres]"],
        check=True,
        timeout=900,
        capture_output=True,
    )
    workdir = base / "work"
    workdir.mkdir()
    shutil.copy(SEED, workdir / "seed_overdue.py")
    return Installed(venv, workdir)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, installed: Installed) -> Iterator[str]:
    if request.param == "sqlite":
        path = installed.workdir / "x.db"
        for leftover in installed.workdir.glob("x.db*"):
            leftover.unlink()
        yield f"sqlite:///{path.name}"  # relative: the worker's own directory
        return
    with private_postgres_database("operator") as pg:
        yield pg


def test_the_installed_package_is_the_wheel(installed: Installed) -> None:
    where = installed.run("python", "-c", "import extension_fsm; print(extension_fsm.__file__)")
    assert "site-packages" in where.stdout and str(ROOT / "src") not in where.stdout
    assert installed.cli("--version").stdout.startswith("extension-fsm ")
    listing = installed.run(
        "python",
        "-c",
        "from importlib.resources import files; m = files('extension_fsm') / 'migrations'; "
        "print([p.name for p in m.iterdir()], [p.name for p in (m / 'versions').iterdir()])",
    ).stdout
    assert "env.py" in listing and "script.py.mako" in listing
    assert "0001_reference_schema.py" in listing  # the revisions are in the wheel


def test_migrate_watch_work_stop_and_migrate_down(installed: Installed, url: str) -> None:
    head = installed.run(
        "python", "-c", "from extension_fsm.migrate import head; print(head())"
    ).stdout.strip()
    assert installed.cli("db", "upgrade", "--db", url).stdout == f"{head} (head)\n"
    assert installed.cli("db", "current", "--db", url).stdout == f"{head} (head)\n"
    installed.run("python", "seed_overdue.py", url, "20")
    doc = json.loads(installed.cli("status", "--db", url, "--json").stdout)
    assert doc["extensions"]["pending"] == 20 and doc["extensions"]["overdue"] == 20
    assert doc["extensions"]["oldest_overdue_seconds"] > 0
    assert set(doc["outbox"]) >= {"waiting", "retrying", "dead"}

    worker = subprocess.Popen(
        [str(installed.bin / "extension-fsm"), "worker", "--db", url, "--interval", "0.2"],
        cwd=installed.workdir,
        env=installed.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        for line in worker.stderr:  # JSON lines; wait (bounded by the timeout) for the sweep
            if json.loads(line)["msg"] == "swept":
                break
        worker.send_signal(signal.SIGTERM)
        _, rest = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, rest
    assert json.loads(rest.splitlines()[-1])["msg"] == "worker stopped"
    doc = json.loads(installed.cli("status", "--db", url, "--json").stdout)
    assert doc["extensions"]["pending"] == 0 and doc["extensions"]["overdue"] == 0
    assert sum(doc["extensions"]["by_status"].values()) == 20

    assert installed.cli("db", "downgrade", "base", "--db", url).stdout == "base (empty)\n"
    gone = installed.cli("status", "--db", url, check=False)
    assert gone.returncode == 1 and "not migrated" in gone.stderr


def test_a_missing_extra_is_named_not_a_traceback(installed: Installed) -> None:
    # ``simulate --random`` needs no extra: without rich its summary is plain text.
    done = installed.cli("simulate", "--random", "1", check=False)
    assert done.returncode == 0 and "every invariant held" in done.stdout
    assert done.stderr == ""
    done = installed.cli("worker", "--db", "sqlite:///w.db", "--redis", "redis://x", check=False)
    assert done.returncode == 2 and "extension-fsm[redis]" in done.stderr
