"""The safety net for an embedded server whose holders were all killed: a small process per running server that
stops it once no live process holds it.

A holder killed with SIGKILL cannot run its exit handlers, so if it was the last one the server would run on, held
by nobody, until some later zoo command adopted it. The watchdog notices within POLL_SECONDS and stops it. It never
stops a server started with `zoo db start` (the service's handle is the postmaster itself, alive while it runs).
It decides under pgserver's lock, the one a joining process holds while it starts the server and adds its handle,
so a process joining at that moment is either counted or starts the server again afterwards. It exits when the
server is gone. One per data folder: every process that joins the server makes sure it runs (ensure_running).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from db import embedded

POLL_SECONDS = 2.0
PID_FILE = ".zoo_watchdog.pid"


def _watchdog_runs(pid_file: Path, data_dir: Path) -> bool:
    """Whether the pid in `pid_file` is this data folder's watchdog (not a dead one's pid, reused)."""
    try:
        command_line = psutil.Process(int(pid_file.read_text().strip())).cmdline()
    except (OSError, ValueError, psutil.Error):  # no file, not a pid, gone, or a zombie
        return False
    return __spec__.name in command_line and str(data_dir) in command_line


def ensure_running(data_dir: Path) -> None:
    """Start the watchdog of the server in `data_dir` unless one runs. It runs in a session of its own, so the
    Ctrl-C or hang-up that ends a zoo command does not end it."""
    pid_file = data_dir / PID_FILE
    with embedded.handle_lock():
        if _watchdog_runs(pid_file, data_dir):
            return
        watchdog = subprocess.Popen([sys.executable, "-m", __spec__.name, str(data_dir)], start_new_session=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid_file.write_text(str(watchdog.pid))


def _server_ended(data_dir: Path) -> bool:
    """Whether the server is gone, after stopping it if it runs held by nobody."""
    from db.service import ServiceError, shut_down

    with embedded.handle_lock():
        if embedded.running_postmaster(data_dir) is None:
            return True
        if embedded.live_handles(data_dir):
            return False
        try:
            shut_down(data_dir)
        except ServiceError:
            pass  # it stopped some other way meanwhile
        return True


def watch(data_dir: Path) -> None:
    try:
        while not _server_ended(data_dir):
            time.sleep(POLL_SECONDS)
    finally:
        pid_file = data_dir / PID_FILE
        try:
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
        except OSError:
            pass  # the folder went with a throwaway server's data


if __name__ == "__main__":
    watch(Path(sys.argv[1]))
