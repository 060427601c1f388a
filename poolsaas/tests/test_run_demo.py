"""`make run` stops cleanly on Ctrl-C and still fails loudly when a part dies.

run_demo runs for real here: its own SQLite file, its own Mosquitto (or the embedded
broker) on a free port, the bridge, the worker and the web server. Ctrl-C is what a
terminal sends: SIGINT to the whole process group, so the children get it too.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management.base import CommandError

from poolsaas.management.commands.run_demo import STOP_SIGNALS, Command

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory) -> Path:
    # Shared by the tests of this module: the second one finds the database migrated.
    return tmp_path_factory.mktemp("run-demo")


class Demo:
    def __init__(self, var_dir: Path):
        self.port = _free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")
        }
        env.update(
            POOLSAAS_VAR_DIR=str(var_dir),
            DEBUG="true",
            MQTT_URL=f"mqtt://127.0.0.1:{_free_port()}",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        self.log_path = var_dir / f"run_demo-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_demo", "--no-devices"]
            + ["--port", str(self.port)],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            # A process group of its own, as a shell gives a foreground job.
            process_group=0,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Until the site answers and run_demo says it is running."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"run_demo exited early:\n{self.output}")
            if "Ctrl-C stops everything" in self.output:
                try:
                    url = f"http://127.0.0.1:{self.port}/login/"
                    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
                        if response.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"run_demo did not come up:\n{self.output}")

    def children(self) -> dict[int, str]:
        """pid -> command line of run_demo's direct children."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid:
                found[int(entry.name)] = cmdline.decode(errors="replace")
        return found

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run_demo did not stop:\n{self.output}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        else:
            # Children that outlived run_demo share its group.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


@pytest.fixture
def demo(var_dir):
    started = Demo(var_dir)
    yield started
    started.stop()


def test_ctrl_c_stops_everything_and_exits_0(demo):
    demo.wait_ready()
    children = demo.children()
    assert any("runserver" in cmd for cmd in children.values()), children
    os.killpg(demo.process.pid, signal.SIGINT)
    assert demo.wait_exit() == 0, demo.output
    out = demo.output
    assert "SIGINT received: stopping…" in out
    assert out.rstrip().endswith("poolsaas stopped.")
    assert "CommandError" not in out
    assert "stopped by itself" not in out
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), pid


def test_sigterm_stops_as_cleanly(demo):
    demo.wait_ready()
    demo.process.send_signal(signal.SIGTERM)
    assert demo.wait_exit() == 0, demo.output
    assert "SIGTERM received: stopping…" in demo.output
    assert demo.output.rstrip().endswith("poolsaas stopped.")


def test_a_part_dying_by_itself_is_still_an_error(demo):
    demo.wait_ready()
    (web,) = [pid for pid, cmd in demo.children().items() if "runserver" in cmd]
    os.kill(web, signal.SIGKILL)
    assert demo.wait_exit() == 1, demo.output
    out = demo.output
    assert "CommandError: web stopped by itself (exit -9); stopping the rest." in out
    assert "poolsaas stopped." not in out


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


MAKEFILE = """run:
\tDEBUG=true {python} manage.py run_demo --no-devices --port {port}
"""


class _Terminal:
    """A pseudo-terminal with `make run` in the foreground, as in a shell."""

    def __init__(self, command: list[str], env: dict, cwd):
        import fcntl
        import termios

        self.master, slave = os.openpty()
        self.chunks: list[bytes] = []

        def controlling_terminal():
            # In the new session (start_new_session), the pty becomes its terminal.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=controlling_terminal,  # noqa: PLW1509
        )
        os.close(slave)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        # Drained all along: a full pty would block the processes writing to it.
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace").replace("\r\n", "\n")

    def ctrl_c(self):
        os.write(self.master, b"\x03")

    def close(self):
        # run_demo leads a process group of its own inside make's session: kill every
        # group of that session (all started by this test), not just make's.
        for group in _groups_of_session(self.process.pid):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        os.close(self.master)


def _groups_of_session(session: int) -> set[int]:
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            groups.add(int(fields[2]))
    return groups


def test_ctrl_c_in_a_terminal_ends_make_run_with_0(var_dir, tmp_path):
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port = _free_port()
    makefile = tmp_path / "Makefile"
    makefile.write_text(MAKEFILE.format(python=sys.executable, port=port))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }
    env.update(
        POOLSAAS_VAR_DIR=str(var_dir),
        MQTT_URL=f"mqtt://127.0.0.1:{_free_port()}",
        LOG_LEVEL="WARNING",
        TERM="dumb",
    )
    terminal = _Terminal(
        ["make", "--no-print-directory", "-f", str(makefile), "run"],
        env=env,
        cwd=settings.BASE_DIR,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "Ctrl-C stops everything" not in terminal.output:
            assert terminal.process.poll() is None, terminal.output
            assert time.monotonic() < deadline, terminal.output
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/login/"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            assert response.status == 200
        terminal.ctrl_c()
        assert terminal.process.wait(60) == 0, terminal.output
        terminal.reader.join(10)
        out = terminal.output
        assert "SIGINT received: stopping…" in out
        assert "poolsaas stopped." in out
        assert "make: ***" not in out
        assert "CommandError" not in out
    finally:
        terminal.close()


# --- the supervisor alone, in this process, with real child processes ---------------


@pytest.fixture
def supervisor():
    command = Command(stdout=StringIO())
    command.children = []
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    yield command
    for _, process in command.children:
        if process.poll() is None:
            process.kill()
            process.wait()
    while signal.sigtimedwait(STOP_SIGNALS, 0) is not None:
        pass
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _child(supervisor, name: str, code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code])
    supervisor.children.append((name, process))
    return process


def _pending(signum: int) -> None:
    # Blocked first, so that it waits for the supervisor, as a Ctrl-C that arrived
    # while it was looking at its children would.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    signal.pthread_kill(threading.get_ident(), signum)


def test_a_child_dead_of_the_same_ctrl_c_is_a_clean_stop(supervisor):
    _child(supervisor, "bridge", "import sys; sys.exit(0)").wait()
    _child(supervisor, "web", "import time; time.sleep(60)")
    _pending(signal.SIGINT)
    supervisor._supervise()
    assert "SIGINT received: stopping…" in supervisor.stdout.getvalue()


def test_a_child_dead_without_a_signal_is_an_error(supervisor):
    _child(supervisor, "web", "import time; time.sleep(60)")
    _child(supervisor, "bridge", "import sys; sys.exit(3)").wait()
    with pytest.raises(CommandError, match=r"bridge stopped by itself \(exit 3\)"):
        supervisor._supervise()


def test_sigterm_while_all_run_is_a_clean_stop(supervisor):
    _child(supervisor, "web", "import time; time.sleep(60)")
    _pending(signal.SIGTERM)
    supervisor._supervise()
    assert "SIGTERM received: stopping…" in supervisor.stdout.getvalue()


def test_dynsec_state_goes_where_the_mosquitto_user_can_reach_it(tmp_path):
    import shutil
    import tempfile

    from poolsaas.management.commands.run_demo import _dynsec_state_dir

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    if os.geteuid() != 0:
        # Not root: Mosquitto keeps this user, which can reach its own folders.
        assert (
            _dynsec_state_dir(private / "var") == private / "var" / "mosquitto-dynsec"
        )
        return
    moved = _dynsec_state_dir(private / "var")
    assert not str(moved).startswith(str(private))
    assert moved == _dynsec_state_dir(private / "var")  # stable across starts
    public = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        public.chmod(0o755)  # noqa: S103 - the point: a folder others may walk into
        assert _dynsec_state_dir(public / "var") == public / "var" / "mosquitto-dynsec"
    finally:
        shutil.rmtree(public)
