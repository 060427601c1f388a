"""The board emulator: the firmware, precompiled with mpy-cross as on an ESP32, running
under the MicroPython unix port as a process, with the stand-ins of `standins/` for what
only the chip has, and Mosquitto brokers the test owns (kill, restart, SIGSTOP, TLS).

Used by tests/test_board_*.py and bench/firmware_soak.py. The board's file system is a
folder (the process's working directory); the world around it (Wi-Fi on the air, water
temperature, reset cause) and what it does (relay pins, watchdog feeds) are files in a
second folder, BOARD_SIM, shared with the stand-ins (standins/_sim.py).
"""

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

FW = Path(__file__).resolve().parent.parent
STANDINS = Path(__file__).resolve().parent / "standins"
# Kept as source on the board (flash.sh): MicroPython runs boot.py/main.py as files.
SOURCE_FILES = ("boot.py", "main.py")
# Not on the board (flash.sh): the package marker, and protocol.py, the protocol's cloud
# side (the board imports protocol_device.py only; leaving protocol.py out makes a board
# module that imports it fail here as it would on the board).
NOT_ON_BOARD = ("__init__.py", "protocol.py")
RESET_EXIT = 86  # standins/machine.py: machine.reset()
PWRON_RESET, HARD_RESET, WDT_RESET, SOFT_RESET = 1, 2, 3, 5
WIFI = ("PoolNet", "pool-password")


def _bin(name):
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def micropython():
    return _bin("micropython")


_build = {}


def build_firmware():
    """Compile the board files once per process; returns the folder of .mpy files."""
    if "dir" in _build:
        return _build["dir"]
    out = Path(tempfile.mkdtemp(prefix="fwbuild"))
    atexit.register(shutil.rmtree, out, True)
    mpy_cross = _bin("mpy-cross")
    for f in sorted(FW.glob("*.py")):
        if f.name in NOT_ON_BOARD:
            continue
        if f.name in SOURCE_FILES:
            shutil.copy(f, out / f.name)
            continue
        subprocess.run(
            [mpy_cross, "-o", str(out / (f.stem + ".mpy")), str(f)], check=True
        )
    # The stand-ins too: on a board these modules are C in ROM, so compiling them at
    # run time would charge the firmware's heap for what the chip does not do.
    (out / "rom").mkdir()
    for f in sorted(STANDINS.glob("*.py")):
        subprocess.run(
            [mpy_cross, "-o", str(out / "rom" / (f.stem + ".mpy")), str(f)], check=True
        )
    _build["dir"] = out
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_netns(netns, cmd):
    return ["ip", "netns", "exec", netns] + list(cmd) if netns else cmd


def port_open(port, host="127.0.0.1", netns=None):
    if netns:
        probe = f"exec 3<>/dev/tcp/{host}/{port}"
        return (
            subprocess.run(
                in_netns(netns, ["bash", "-c", probe]), capture_output=True
            ).returncode
            == 0
        )
    try:
        with socket.create_connection((host, port), 0.5):
            return True
    except OSError:
        return False


def wait(pred, timeout, what="condition", every=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(every)


class Broker:
    """A Mosquitto of our own on a free loopback port (persistent sessions, optionally
    TLS with the given certificate files)."""

    def __init__(self, root, port=None, tls=None, persistence=True, netns=None):
        self.netns = netns
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        # With tls ({"cafile", "certfile", "keyfile"}) a second listener on tls_port.
        self.tls = tls
        self.tls_port = free_port()
        self.persistence = persistence
        self.proc = None
        self.frozen = False

    @property
    def url(self):
        return f"mqtt://127.0.0.1:{self.port}"

    def _conf(self):
        lines = [
            # As root, Mosquitto would switch to its own user, who cannot read tmp_path.
            "user root",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "log_dest stderr",
            "log_type error",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.root}/"]
        if self.tls:
            lines.append(f"listener {self.tls_port} 127.0.0.1")
            lines += ["{} {}".format(*kv) for kv in sorted(self.tls.items())]
        conf = self.root / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self):
        self.proc = subprocess.Popen(
            in_netns(self.netns, ["mosquitto", "-c", str(self._conf())]),
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "mosquitto.log", "ab"),  # noqa: SIM115
        )
        self.frozen = False
        for port in (self.port, self.tls_port) if self.tls else (self.port,):
            wait(lambda p=port: port_open(p, netns=self.netns), 10, f"mosquitto {port}")
        return self

    def _signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL: sessions not saved since the last autosave are gone."""
        self.thaw()
        self._signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)

    def stop(self):
        """SIGTERM: Mosquitto saves its sessions and exits."""
        self.thaw()
        self._signal(signal.SIGTERM)
        if self.proc:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def freeze(self):
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        if self.frozen:
            self._signal(signal.SIGCONT)
            self.frozen = False

    def restart(self):
        self.stop()
        return self.start()


def make_ca(root, name):
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt = (
        root / (name + s) for s in ("-ca.key", "-ca.pem", ".key", ".csr", ".pem")
    )
    ext = root / (name + ".ext")
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True)

    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
    run(
        "req", "-x509", "-new", "-key", str(ca_key), "-days", "30",
        "-subj", "/CN=poolsaas test CA " + name, "-out", str(ca),
    )  # fmt: skip
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    run("req", "-new", "-key", str(key), "-subj", "/CN=127.0.0.1", "-out", str(csr))
    run(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip
    return {"cafile": str(ca), "certfile": str(crt), "keyfile": str(key)}


class Board:
    """One emulated ESP32 running the firmware.

    start() powers it on; the board restarts itself after machine.reset() (soft reset)
    and after its watchdog fires (WDT reset), like the chip. power_cut() kills it.
    """

    def __init__(
        self,
        root,
        broker_port=None,
        prefix="devices",
        device_id=None,
        provisioned=True,
        config="",
        heap_kb=None,
        netns=None,
        tls=False,
        ca_pem=None,
        username="",
        password="",
    ):
        self.root = Path(root)
        self.fs = self.root / "fs"
        self.sim = self.root / "sim"
        self.fs.mkdir(parents=True, exist_ok=True)
        self.sim.mkdir(parents=True, exist_ok=True)
        self.device_id = device_id or "ESP-" + uuid.uuid4().hex[:6].upper()
        self.prefix = prefix
        self.heap_kb = heap_kb
        self.netns = netns
        self.lines = []
        self.boots = []  # reset cause of every start
        self.watchdog_resets = 0
        self.crashes = []
        self.proc = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor = None
        self._expect_exit = False
        self.build = build_firmware()
        for f in self.build.iterdir():
            if f.is_file():
                shutil.copy(f, self.fs / f.name)
        self.set_air({WIFI[0]: [WIFI[1], -61]})
        cfg = [
            f"DEVICE_ID = {self.device_id!r}",
            "KEEPALIVE_S = 4",
            "WDT_TIMEOUT_MS = 10000",
            "NTP_HOST = None",
        ]
        if provisioned:
            mqtt = {
                "host": "127.0.0.1",
                "port": broker_port,
                "tls": tls,
                "username": username,
                "password": password,
                "prefix": prefix,
            }
            cfg += [f"WIFI = [{WIFI!r}]", f"MQTT = {mqtt!r}"]
        if ca_pem:
            (self.fs / "ca.pem").write_text(ca_pem)
        (self.fs / "local_config.py").write_text("\n".join(cfg) + "\n" + config + "\n")

    # --- the world around the board ---------------------------------------------------

    def _write(self, name, text):
        tmp = self.sim / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.sim / name)

    def set_air(self, networks):
        self._write("air.json", json.dumps(networks))

    def wifi(self, up):
        """Drop or restore every Wi-Fi network (the router off or on)."""
        down = self.sim / "wifi_down"
        if up:
            down.unlink(missing_ok=True)
        else:
            down.write_text("")

    def set_temp(self, celsius):
        self._write("temp", "" if celsius is None else str(celsius))

    def pins(self):
        try:
            text = (self.sim / "pins").read_text()
        except OSError:
            return {}
        return {int(k): int(v) for k, v in (ln.split("=") for ln in text.split() if ln)}

    def pump_on(self, pin=26, active_low=True):
        level = self.pins().get(pin)
        return level is not None and (level == 0) == active_low

    def file(self, name):
        try:
            return (self.fs / name).read_text()
        except OSError:
            return None

    # --- power ------------------------------------------------------------------------

    def _spawn(self, cause):
        self._write("reset_cause", str(cause))
        (self.sim / "wdt").unlink(missing_ok=True)
        (self.sim / "reset").unlink(missing_ok=True)
        self.boots.append(cause)
        cmd = [micropython()]
        if self.heap_kb:
            cmd += ["-X", f"heapsize={self.heap_kb}k"]
        cmd += ["-c", "import boot\nimport main\n"]
        cmd = in_netns(self.netns, cmd)
        env = dict(os.environ)
        env["MICROPYPATH"] = ".frozen:" + str(self.build / "rom")
        env["BOARD_SIM"] = str(self.sim)
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.fs,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc):
        for raw in proc.stdout:
            with self._lock:
                self.lines.append(raw.decode(errors="replace").rstrip())

    def start(self, cause=PWRON_RESET):
        self._stop.clear()
        self._spawn(cause)
        if self._monitor is None or not self._monitor.is_alive():
            self._monitor = threading.Thread(target=self._watch, daemon=True)
            self._monitor.start()
        return self

    def _wdt_expired(self):
        try:
            st = (self.sim / "wdt").stat()
            timeout_ms = int((self.sim / "wdt").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return time.time() - st.st_mtime > timeout_ms / 1000

    def _watch(self):
        while not self._stop.is_set():
            time.sleep(0.1)
            with self._lock:
                proc = self.proc
                if proc is None or self._expect_exit:
                    continue
                rc = proc.poll()
                if rc is None and (self.sim / "reset").exists():
                    # machine.reset() from a timer callback (standins/machine.py).
                    proc.kill()
                    proc.wait()
                    self.lines.append("### soft reset")
                    self._spawn(SOFT_RESET)
                    continue
                if rc is None:
                    if self._wdt_expired():
                        proc.kill()
                        proc.wait()
                        self.watchdog_resets += 1
                        self.lines.append("### watchdog reset")
                        self._spawn(WDT_RESET)
                    continue
                if rc == RESET_EXIT:
                    self.lines.append("### soft reset")
                    self._spawn(SOFT_RESET)
                elif self._wdt_expired():
                    # Crashed after arming the watchdog: the chip would sit in the
                    # REPL until the watchdog resets it.
                    self.watchdog_resets += 1
                    self.crashes.append(rc)
                    self.lines.append(f"### crash {rc}, then watchdog reset")
                    self._spawn(WDT_RESET)
                elif not (self.sim / "wdt").exists():
                    self.crashes.append(rc)
                    self.lines.append(f"### exited {rc} (no watchdog armed)")
                    self.proc = None

    def power_cut(self):
        """Pull the plug (no goodbye, no will suppression)."""
        with self._lock:
            self._expect_exit = True
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self._expect_exit = False

    def power_on(self):
        with self._lock:
            self._spawn(PWRON_RESET)

    def stop(self):
        self._stop.set()
        self.power_cut()
        if self._monitor:
            self._monitor.join(5)

    def log(self, last=80):
        with self._lock:
            return "\n".join(self.lines[-last:])

    def saw(self, text):
        with self._lock:
            return sum(text in ln for ln in self.lines)
