"""Serial focus drives through real pyserial against controller emulators on pseudo-terminals.

Each emulator (tests/emulators/) serves one end of a pty pair; the driver opens the other end
through a symlink, so a test can make the port vanish and come back under the same name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from device_contracts import FocusStageContract
from emulators.base import PtyEmulator
from emulators.controllers import ASIEmulator, GrblEmulator, PriorEmulator, TangoEmulator

from drivers.errors import ConfigurationError, ConnectionLostError, DeviceError, DeviceTimeoutError, LimitError
from drivers.serial import ASIStage, GrblStage, PriorStage, SerialFocusStage, TangoStage, make_serial_stage

KINDS: dict[str, tuple[type[SerialFocusStage], type[PtyEmulator]]] = {
    "asi": (ASIStage, ASIEmulator),
    "prior": (PriorStage, PriorEmulator),
    "tango": (TangoStage, TangoEmulator),
    "grbl": (GrblStage, GrblEmulator),
}
# Read-back resolution: ASI 0.1 um units with one decimal sent, Prior 0.02 um steps (emulated
# RES,Z), Tango um with 4 decimals, GRBL reports MPos in mm with 3 decimals (1 um).
READBACK_UM = {"asi": 0.011, "prior": 0.011, "tango": 0.011, "grbl": 0.51}
# What each driver sends to halt (a command line, or a real-time byte for GRBL).
HALT_LINE = {"asi": "HALT", "prior": "K", "tango": "a z"}


@dataclass
class Rig:
    kind: str
    stage: SerialFocusStage
    emulator: PtyEmulator
    port: Path


def _make_rig(kind: str, tmp_path: Path, *, start_um: float = 0.0) -> Rig:
    stage_cls, emu_cls = KINDS[kind]
    port = tmp_path / f"tty-{kind}"
    emulator = emu_cls(port, start_um=start_um).start()
    stage = stage_cls(str(port), timeout_s=0.3, limits_um=(-500.0, 500.0), max_step_um=100.0, speed_um_s=2000.0)
    return Rig(kind, stage, emulator, port)


@pytest.fixture(params=sorted(KINDS))
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    r = _make_rig(request.param, tmp_path)
    r.stage.open()
    yield r
    r.stage.close()
    r.emulator.close()


@pytest.fixture(params=["asi", "prior", "tango"])
def fine_rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    r = _make_rig(request.param, tmp_path)
    r.stage.open()
    yield r
    r.stage.close()
    r.emulator.close()


class TestSerialStageContract(FocusStageContract):
    @pytest.fixture
    def focus_stage(self, fine_rig: Rig) -> SerialFocusStage:
        return fine_rig.stage


class TestGrblStageContract(FocusStageContract):
    z_tolerance_um = READBACK_UM["grbl"]  # GRBL reports positions to 1 um

    @pytest.fixture
    def focus_stage(self, tmp_path: Path) -> Iterator[SerialFocusStage]:
        r = _make_rig("grbl", tmp_path)
        r.stage.open()
        yield r.stage
        r.stage.close()
        r.emulator.close()


def test_units_are_converted_to_the_controllers_own(rig: Rig) -> None:
    got = rig.stage.move_to(12.34)
    assert got == pytest.approx(12.34, abs=READBACK_UM[rig.kind])
    assert rig.emulator.motion.position_um == pytest.approx(12.34, abs=0.011)
    sent = {
        "asi": "M Z=123.4",  # tenths of a micrometre
        "prior": "U,617",  # 0.02 um per step, from RES,Z
        "tango": "!moa z 12.3400",  # micrometres after !dim z 1
        "grbl": "$J=G90 G21 Z0.01234 F120.0",  # millimetres, feed in mm/min from speed_um_s
    }[rig.kind]
    assert sent in rig.emulator.received
    rig.stage.move_by(-2.34)  # relative to the position read back (GRBL: to 1 um)
    assert rig.emulator.motion.position_um == pytest.approx(got - 2.34, abs=0.011)


def test_start_position_is_read_from_the_controller(tmp_path: Path) -> None:
    for kind in KINDS:
        r = _make_rig(kind, tmp_path, start_um=-42.5)
        with r.stage:
            assert r.stage.z_um == pytest.approx(-42.5, abs=READBACK_UM[kind]), kind
        r.emulator.close()


def test_busy_while_the_emulated_move_runs(rig: Rig) -> None:
    rig.emulator.motion.speed_um_s = 200.0  # 40 um takes 0.2 s
    rig.stage.move_to(40.0, wait=False)
    assert rig.stage.is_busy()
    assert 0.0 <= rig.stage.z_um < 40.0
    rig.stage.wait_until_idle(5.0)
    assert not rig.stage.is_busy()
    assert rig.stage.z_um == pytest.approx(40.0, abs=READBACK_UM[rig.kind])


def test_controller_error_reply_is_a_clear_device_error(rig: Rig) -> None:
    rig.emulator.motion.travel_um = (-50.0, 50.0)  # the controller's own travel, inside our soft limits
    with pytest.raises(DeviceError, match=r"(?i)error"):
        rig.stage.move_to(80.0)
    assert rig.stage.z_um == pytest.approx(0.0, abs=0.011)
    assert rig.stage.move_to(20.0) == pytest.approx(20.0, abs=0.011)  # still usable


def test_soft_limits_refused_before_anything_is_sent(rig: Rig) -> None:
    before = len(rig.emulator.received)
    with pytest.raises(LimitError, match="soft limits"):
        rig.stage.move_to(600.0)
    moves = [line for line in rig.emulator.received[before:] if line[:1] in "MRUD!$"]
    assert moves == []


def test_silent_controller_times_out_then_recovers(rig: Rig) -> None:
    rig.emulator.mute = True
    with pytest.raises(DeviceTimeoutError, match="no reply"):
        _ = rig.stage.z_um
    rig.emulator.mute = False
    assert rig.stage.z_um == pytest.approx(0.0, abs=0.011)


@pytest.mark.slow
def test_stalled_move_times_out_and_halts(rig: Rig) -> None:
    rig.emulator.motion.stall = True
    with pytest.raises(DeviceTimeoutError, match="did not finish"):
        rig.stage.move_to(5.0)  # timeout max(3 s, 3 * 5 / 2000)
    if rig.kind == "grbl":
        assert 0x85 in rig.emulator.received_realtime
    else:
        assert HALT_LINE[rig.kind] in rig.emulator.received
    rig.emulator.motion.stall = False
    assert not rig.stage.is_busy()


def test_stop_preempts_an_exchange_in_progress(rig: Rig) -> None:
    """stop() writes the halt while another thread holds the exchange lock; the move halts."""
    rig.emulator.motion.speed_um_s = 50.0  # 80 um would take 1.6 s
    rig.stage.move_to(80.0, wait=False)
    held, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with rig.stage.link._lock:
            held.set()
            release.wait(5.0)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert held.wait(2.0)
    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (rig.stage.stop(), stopped.set()))
    stopper.start()
    stopped_while_locked = stopped.wait(2.0)
    time.sleep(0.05)
    release.set()
    holder.join()
    stopper.join()
    assert stopped_while_locked
    deadline = time.monotonic() + 5.0
    while rig.emulator.motion.moving and time.monotonic() < deadline:
        time.sleep(0.01)  # the emulator thread handles the halt it was sent
    assert not rig.emulator.motion.moving
    halted_at = rig.emulator.motion.position_um
    assert 0.0 < halted_at < 80.0
    # The halt's own reply must not be taken for the next answer.
    assert not rig.stage.is_busy()
    assert rig.stage.z_um == pytest.approx(halted_at, abs=READBACK_UM[rig.kind])


def test_port_vanishes_and_comes_back(rig: Rig) -> None:
    rig.stage.move_to(10.0)
    rig.emulator.vanish()
    with pytest.raises(ConnectionLostError):
        _ = rig.stage.z_um
    with pytest.raises(ConnectionLostError):
        rig.stage.move_to(12.0)  # still gone: refused, nothing assumed
    rig.emulator.reappear()
    rig.emulator.received.clear()
    assert rig.stage.move_to(15.0) == pytest.approx(15.0, abs=0.011)
    assert rig.stage.describe()["reconnects"] == 1
    # After the reconnect the position was read before the move command went out.
    position_query = {"asi": "W Z", "prior": "PZ", "tango": "?pos z", "grbl": None}[rig.kind]
    move_index = next(i for i, line in enumerate(rig.emulator.received) if line[:2] in ("M ", "U,", "D,", "!m", "$J"))
    if position_query is not None:
        assert position_query in rig.emulator.received[:move_index]
    else:  # GRBL reads position with the real-time '?'
        assert ord("?") in rig.emulator.received_realtime


def test_garbage_on_the_line_is_skipped(rig: Rig) -> None:
    rig.stage.move_to(7.0)
    rig.emulator.garbage = b"\x00\xfe#@%noise\r\n"  # a whole junk line before the reply
    assert rig.stage.z_um == pytest.approx(7.0, abs=0.011)
    rig.emulator.garbage = b"\xfe\xfd~~"  # junk glued to the front of the reply: re-asked once
    assert rig.stage.z_um == pytest.approx(7.0, abs=0.011)


def test_missing_port_is_a_connection_error(tmp_path: Path) -> None:
    stage = ASIStage(str(tmp_path / "no-such-tty"), limits_um=(-10.0, 10.0), max_step_um=5.0)
    with pytest.raises(ConnectionLostError, match="cannot open serial port"):
        stage.open()
    assert not stage.is_open


def test_grbl_in_alarm_refuses_to_open(tmp_path: Path) -> None:
    r = _make_rig("grbl", tmp_path)
    r.emulator.alarm = True
    with pytest.raises(DeviceError, match=r"Alarm.*\$X"):
        r.stage.open()
    assert not r.stage.is_open
    r.emulator.close()


def test_factory_builds_each_kind_and_refuses_unknown(tmp_path: Path) -> None:
    common = {
        "port": str(tmp_path / "x"),
        "baudrate": None,
        "timeout_s": 0.5,
        "limits_um": (-1.0, 1.0),
        "max_step_um": 1.0,
        "direction": -1,
        "speed_um_s": 10.0,
        "settle_ms": 0.0,
    }
    for kind, (cls, _) in KINDS.items():
        stage = make_serial_stage(kind, **common)
        assert type(stage) is cls
        assert stage.link.baudrate == cls.DEFAULT_BAUDRATE
        assert stage.direction == -1
    with pytest.raises(ConfigurationError, match="allowed: asi, prior, tango, grbl"):
        make_serial_stage("ludl", **common)
