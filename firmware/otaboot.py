"""The permanent half of over-the-air updates: which application folder runs, the swap,
the trial of a new version and the rollback (docs/ota.md, "On the device").

The board's root holds boot.py, main.py, this module and local_config.py (never
updated over the air), the factory application (the modules flashed by tools/flash.sh)
and the board's own files (state.json, provision.json, ...). An update lives in a
folder that shadows the factory modules on sys.path:

    fw/      the application in use (absent: the factory modules at the root)
    fw.new/  the staging folder: the download, then the unpacked bundle
    fw.old/  the previous application, kept for a rollback

`ota.json` says where an update stands; every step that moves folders writes its
phase first, so a power cut at any point is finished (or undone) at the next boot.
A new version runs on trial: it must connect and report healthy (`confirm`) before
its deadline (a hardware timer) and within a few boots (the watchdog resets a
version that crashes or hangs); otherwise it rolls back by itself, here, without
any of its own code.

Imports nothing of the application: what this module loaded at boot would shadow
the new version's modules for the rest of the run.
"""

import json
import os
import sys

CUR, NEW, OLD, BAD = "fw", "fw.new", "fw.old", "fw.bad"
STATE = "ota.json"
TRIAL_S = 180  # defaults; the swap writes the old version's settings into the state
TRIAL_BOOTS = 3
TRIAL_WDT_MS = 30000

_guard = [None]


def path(root, name):
    return root + "/" + name if root else name


def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def is_dir(p):
    try:
        return os.stat(p)[0] & 0x4000 != 0
    except OSError:
        return False


def rmtree(p):
    """Remove a folder and what it holds (one level of subfolders is all we make)."""
    if not exists(p):
        return
    if not is_dir(p):
        os.remove(p)
        return
    for name in os.listdir(p):
        rmtree(p + "/" + name)
    os.rmdir(p)


def load(root=""):
    for p in (path(root, STATE), path(root, STATE + ".tmp")):
        try:
            with open(p) as f:
                data = json.loads(f.read())
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
    return {}


def save(root, data):
    """Atomic replace: a power cut leaves the old state or the new one."""
    p = path(root, STATE)
    tmp = p + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data))
    try:
        os.rename(tmp, p)
    except OSError:  # FAT refuses to rename over a file
        try:
            os.remove(p)
        except OSError:
            pass
        os.rename(tmp, p)


def clear(root=""):
    for p in (path(root, STATE), path(root, STATE + ".tmp")):
        try:
            os.remove(p)
        except OSError:
            pass


def _finish_swap(root, st):
    new, cur, old = path(root, NEW), path(root, CUR), path(root, OLD)
    if exists(new):
        if exists(cur):
            rmtree(old)
            os.rename(cur, old)
        os.rename(new, cur)
    st["phase"] = "trial"
    st["boots"] = 0
    save(root, st)


def swap(root, st):
    """Make the verified staging folder the application: fw -> fw.old, fw.new -> fw.
    `st` is the update's state (campaign, version, trial settings); afterwards the
    phase is "trial" and the board must reboot into the new version."""
    st["phase"] = "swap"
    st["prev"] = exists(path(root, CUR))
    if st["prev"]:
        rmtree(path(root, OLD))  # a leftover: the previous application is fw
    save(root, st)
    _finish_swap(root, st)


def _finish_rollback(root, st):
    cur, old, bad = path(root, CUR), path(root, OLD), path(root, BAD)
    if exists(old):
        if exists(cur):
            rmtree(bad)
            os.rename(cur, bad)
        os.rename(old, cur)
    elif not st.get("prev") and exists(cur):
        # The first update had no folder before it: the factory modules come back.
        rmtree(bad)
        os.rename(cur, bad)
    rmtree(bad)
    st["phase"] = "rolled_back"
    save(root, st)


def rollback(root, st, reason):
    """Put the previous application back (fw.old, or the factory modules); the phase
    becomes "rolled_back", which the old version reports once it is online."""
    st["phase"] = "rollback"
    st["reason"] = reason
    save(root, st)
    _finish_rollback(root, st)


def confirm(root=""):
    """The new version connected and reported healthy: the trial is over."""
    st = load(root)
    if st.get("phase") != "trial":
        return False
    g = _guard[0]
    if g is not None:
        try:
            g.deinit()
        except (AttributeError, OSError):
            pass
        _guard[0] = None
    clear(root)  # nothing left to do or report (ota.json exists only then)
    return True


def decide(root=""):
    """At boot, before the application is imported: finish an interrupted swap or
    rollback, count a trial boot and roll back after too many. Returns the state
    (phase "trial": this boot runs the new version on trial)."""
    st = load(root)
    phase = st.get("phase")
    if phase == "swap":
        _finish_swap(root, st)
        phase = "trial"
    elif phase == "rollback":
        _finish_rollback(root, st)
    if phase == "trial":
        st["boots"] = st.get("boots", 0) + 1
        if st["boots"] > st.get("trial_boots", TRIAL_BOOTS):
            rollback(root, st, "not healthy after " + str(st["boots"] - 1) + " boots")
        else:
            save(root, st)
    return st


def folder(root=""):
    """The application folder to put first on sys.path, or None (factory)."""
    return path(root, CUR) if is_dir(path(root, CUR)) else None


def _expire(_arg=None):
    # A hardware timer's (scheduled) callback: the new version did not report healthy
    # in time, whatever its own code is doing.
    st = load()
    if st.get("phase") == "trial":
        s = str(st.get("trial_s", TRIAL_S))
        rollback("", st, "no healthy report within " + s + " s")
        import machine

        machine.reset()


def _arm(st):
    try:
        import machine
    except ImportError:
        return
    try:
        # Crashing before the application's own watchdog exists would leave the
        # board in the REPL for ever; this one resets it, and the boot is counted.
        machine.WDT(timeout=st.get("trial_wdt_ms", TRIAL_WDT_MS))
        t = machine.Timer(0)
        t.init(
            mode=machine.Timer.ONE_SHOT,
            period=st.get("trial_s", TRIAL_S) * 1000,
            callback=_expire,
        )
        _guard[0] = t
    except (AttributeError, OSError, ValueError) as e:
        print("otaboot: no trial guard:", e)


def select():
    """main.py, before `import app`: decide, then run the right application."""
    try:
        st = decide()
    except OSError as e:  # a file system error must not stop the board booting
        print("otaboot:", e)
        st = {}
    f = folder()
    if f:
        sys.path.insert(0, f)
    if st.get("phase") == "trial":
        print("otaboot: version", st.get("version"), "on trial, boot", st["boots"])
        _arm(st)
    elif st.get("phase") == "rolled_back":
        print("otaboot: rolled back:", st.get("reason"))
    return st
