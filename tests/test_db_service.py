"""`zoo db start | stop | status | url | shell` and the read-only role.

The service tests run the real `zoo` command in subprocesses (a background service must outlive the command that
started it, and a killed `zoo` must be a real process) on an embedded server of their own, in a temporary ZOO_HOME;
the module's fixture stops it whatever happens. The tests of that server run in file order: start, use, stop,
then the killed-`zoo` cases from a stopped server. The role's grants are checked on the session's server too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from sqlalchemy import Engine, text

from cli import main as cli
from db import embedded, reader_role, service

ZOO = Path(sys.executable).with_name("zoo")
STARTUP_SECONDS = 240  # a cold `zoo` imports torch; the first start also runs initdb and the migrations


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "ZOO_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    return env


def _zoo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ZOO), *args], env=_env(home), capture_output=True, text=True,
                          timeout=STARTUP_SECONDS)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _handles(data_dir: Path) -> list[int]:
    path = data_dir / embedded.HANDLE_LIST
    return json.loads(path.read_text()) if path.exists() else []


def _server_tree(data_dir: Path) -> list[psutil.Process]:
    """The postmaster running on data_dir and its children (backends, background workers)."""
    info = embedded.running_postmaster(data_dir)
    if info is None:
        return []
    postmaster = psutil.Process(info.pid)
    return [postmaster, *postmaster.children(recursive=True)]


def _gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A ZOO_HOME of its own (not under pytest's basetemp, which a concurrent session may delete); its server is
    stopped at the end whatever the tests left."""
    folder = Path(tempfile.mkdtemp(prefix="zoo-test-dbsvc-"))
    yield folder
    data_dir = folder / "pg" / "data"
    if data_dir.exists():
        leftovers = _server_tree(data_dir)
        service.stop(data_dir, force=True)
        for process in leftovers:
            if process.is_running():
                process.kill()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def data_dir(home: Path) -> Path:
    return (home / "pg" / "data").resolve()


@pytest.fixture(scope="module")
def port() -> int:
    return _free_port()


@pytest.fixture
def in_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI called in-process on this module's home (these commands only read where the server runs)."""
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return home


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["db", *args])
    return code, capsys.readouterr().out.strip()


def test_start_runs_the_server_in_the_background(home: Path, data_dir: Path, port: int):
    started = _zoo(home, "db", "start", "--tcp", "--port", str(port), "--json")
    assert started.returncode == 0, started.stderr
    status = json.loads(started.stdout)
    assert status["running"] and status["service"] and (status["tcp_host"], status["port"]) == ("127.0.0.1", port)
    # the command has exited; the server it started has not
    assert psutil.pid_exists(status["pid"]) and embedded.running_postmaster(data_dir).pid == status["pid"]
    secrets = home / "pg" / "secrets"
    assert sorted(p.name for p in secrets.iterdir()) == ["postgres.password", "zoo_reader.password"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in secrets.iterdir())


def test_status_says_whether_where_pid_and_port(in_home: Path, data_dir: Path, port: int,
                                                capsys: pytest.CaptureFixture[str]):
    code, out = _cli(capsys, "status", "--json")
    status = json.loads(out)["embedded"]
    assert code == 0
    assert status["running"] and status["service"] and status["clients"] == []
    assert (status["data_dir"], status["port"], status["pid"]) == (
        str(data_dir), port, embedded.running_postmaster(data_dir).pid)


def test_url_connects_over_tcp_with_the_generated_password(in_home: Path, port: int,
                                                          capsys: pytest.CaptureFixture[str]):
    code, url = _cli(capsys, "url")
    assert code == 0 and url.startswith("postgresql://postgres:") and url.endswith(f"@127.0.0.1:{port}/postgres")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user, inet_server_port()").fetchone() == ("postgres", port)
    password = (in_home / "pg" / "secrets" / "postgres.password").read_text().strip()
    assert password in url
    for wrong in (f"postgresql://postgres@127.0.0.1:{port}/postgres",
                  f"postgresql://postgres:not-{password}@127.0.0.1:{port}/postgres"):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(wrong, connect_timeout=5).close()


def test_read_only_url_reads_the_views_and_refuses_writes(in_home: Path, port: int,
                                                          capsys: pytest.CaptureFixture[str]):
    code, url = _cli(capsys, "url", "--read-only")
    assert code == 0 and url.startswith("postgresql://zoo_reader:") and f"@127.0.0.1:{port}/" in url
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM adapters_per_base_model").fetchone() is not None
        assert conn.execute("SELECT count(*) FROM models").fetchone() == (0,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO models_raw (id) VALUES (1)")
        conn.execute("SET default_transaction_read_only = off")  # the session default is not the guard
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO models_raw (id) VALUES (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.scratch (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM studio_jobs")


def test_shell_runs_psql(home: Path):
    shell = _zoo(home, "db", "shell", "--read-only", "--", "-Atc", "SELECT current_user")
    assert (shell.returncode, shell.stdout.strip()) == (0, "zoo_reader"), shell.stderr


def test_stop_leaves_no_postgres_process(home: Path, data_dir: Path):
    processes = _server_tree(data_dir)
    assert processes
    stopped = _zoo(home, "db", "stop")
    assert stopped.returncode == 0, stopped.stderr
    _wait_for(lambda: _gone(processes), 30, "the server's processes to exit")
    # nor its watchdog (it exits with the server)
    _wait_for(lambda: not [p for p in psutil.process_iter() if str(data_dir) in _command_line(p)], 30,
              "every process naming the data folder to exit")
    assert _zoo(home, "db", "status").returncode == 3


def test_url_of_a_stopped_server_says_to_start_it(in_home: Path, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["db", "url"]) == 3
    assert "zoo db start" in capsys.readouterr().err


def test_start_and_stop_refuse_another_configured_server(database_url: str, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert (cli.main(["db", "start"]), cli.main(["db", "stop"])) == (2, 2)
    assert "DATABASE_URL is set" in capsys.readouterr().err


def _command_line(process: psutil.Process) -> str:
    try:
        return "" if process.status() == psutil.STATUS_ZOMBIE else " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _shell_holding_the_server(home: Path, data_dir: Path) -> subprocess.Popen[str]:
    """A `zoo db shell` whose psql waits on its stdin: a zoo process holding the (not started) server."""
    assert embedded.running_postmaster(data_dir) is None
    shell = subprocess.Popen([str(ZOO), "db", "shell"], env=_env(home), stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    _wait_for(lambda: shell.pid in _handles(data_dir) and embedded.running_postmaster(data_dir) is not None
              and bool(psutil.Process(shell.pid).children()), STARTUP_SECONDS, "the shell to start the server and psql")
    return shell


def test_a_terminated_zoo_stops_the_server_it_was_the_last_to_hold(home: Path, data_dir: Path):
    shell = _shell_holding_the_server(home, data_dir)
    processes = _server_tree(data_dir)
    shell.send_signal(signal.SIGTERM)
    assert shell.wait(60) == 130
    _wait_for(lambda: _gone(processes), 60, "the server to stop after its last holder was terminated")
    assert shell.pid not in _handles(data_dir)


def test_a_killed_zoo_leaves_no_orphan_and_does_not_block_the_next_start(home: Path, data_dir: Path):
    shell = _shell_holding_the_server(home, data_dir)
    psql = psutil.Process(shell.pid).children()
    processes = _server_tree(data_dir)
    shell.kill()
    shell.wait(30)
    shell.stdin.close()  # the orphaned psql reads end of input and exits
    psutil.wait_procs(psql, timeout=30)
    # no holder left alive: the watchdog stops the server
    _wait_for(lambda: _gone(processes), 30, "the watchdog to stop a server held by a killed zoo only")
    started = _zoo(home, "db", "start", "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["service"] and shell.pid not in _handles(data_dir)
    processes = _server_tree(data_dir)
    assert _zoo(home, "db", "stop").returncode == 0
    _wait_for(lambda: _gone(processes), 30, "the server to stop")


def test_the_role_reads_catalogue_and_views_but_not_the_job_queue(engine: Engine):
    def can_read(relation: str) -> bool:
        return conn.execute(text("SELECT has_table_privilege(:role, :relation, 'SELECT')"),
                            {"role": reader_role.READER_ROLE, "relation": relation}).scalar()

    with engine.begin() as conn:
        assert can_read("models") and can_read("adapters_per_base_model")
        assert not can_read("studio_jobs") and not can_read("procrastinate_jobs")
        assert not conn.execute(text("SELECT has_table_privilege(:role, 'models', 'INSERT')"),
                                {"role": reader_role.READER_ROLE}).scalar()
        conn.execute(text("CREATE TABLE added_later (x int)"))  # as a later migration would
        assert can_read("added_later")
        conn.execute(text("DROP TABLE added_later"))


def test_reader_sql_for_a_dba_runs_again_cleanly(engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, sql = _cli(capsys, "reader-sql")
    assert code == 0 and "CREATE ROLE zoo_reader LOGIN PASSWORD 'choose-a-password'" in sql
    assert "ALTER DEFAULT PRIVILEGES FOR ROLE" in sql
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(sql.replace("PASSWORD 'choose-a-password'", ""))  # the role exists: the statements re-run
    code, url = _cli(capsys, "url", "--read-only")
    assert code == 0 and url.startswith("postgresql://zoo_reader@")  # the DBA's password: none printed


def test_a_user_who_may_not_create_roles_skips_the_role(engine: Engine, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(reader_role, "READER_ROLE", "zoo_reader_absent")
    with engine.begin() as conn:
        conn.execute(text("CREATE ROLE zoo_test_plain NOLOGIN"))
        conn.execute(text("SET LOCAL ROLE zoo_test_plain"))
        assert not reader_role.may_manage_roles(conn) and reader_role.apply(conn) is False
        conn.execute(text("RESET ROLE"))
        assert not reader_role.reader_exists(conn)
        conn.execute(text("DROP ROLE zoo_test_plain"))
