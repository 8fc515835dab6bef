"""program() against a fake board tree: every write and command recorded, in order."""

import pytest

from kvpath.boards.kv260.program import ProgramError, program
from tests.boards.support import MGR, FakeBoard


def test_xmutil(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root", tools={"xmutil", "dfx-mgr-client"})
    r = program(app_dir, **b.kwargs())
    assert (r.method, r.overlay_applied) == ("xmutil", True)
    assert b.events == [("cmd", ["xmutil", "unloadapp"]), ("cmd", ["xmutil", "loadapp", "kvpath"]), ("check",)]
    dest = b.root / "lib/firmware/xilinx/kvpath"
    for f in ("kvpath.bit.bin", "kvpath.dtbo", "shell.json"):
        assert (dest / f).read_bytes() == (app_dir / f).read_bytes()


def test_xmutil_unload_failure_is_only_noted(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root", tools={"xmutil"}, rc={"unloadapp": 1})
    r = program(app_dir, **b.kwargs())
    assert "unloadapp exited 1" in r.notes[0] and b.events[-1] == ("check",)


def test_xmutil_load_failure(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root", tools={"xmutil"}, rc={"loadapp": 255})
    with pytest.raises(ProgramError, match=r"xmutil loadapp kvpath failed \(exit 255\)[\s\S]*xmutil says no"):
        program(app_dir, **b.kwargs())
    assert ("check",) not in b.events


def test_xmutil_state_not_operating(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root", tools={"xmutil"}, load_ok=False)
    with pytest.raises(ProgramError, match="state is 'write error' after xmutil loadapp kvpath"):
        program(app_dir, **b.kwargs())
    assert ("check",) not in b.events


def test_dfx_mgr_client(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root", tools={"dfx-mgr-client"})
    r = program(app_dir, **b.kwargs())
    assert (r.method, r.overlay_applied) == ("dfx-mgr-client", True)
    assert b.events == [("cmd", ["dfx-mgr-client", "-b", str(app_dir / "kvpath.bit.bin"), "-f", "Full",
                                 "-o", str(app_dir / "kvpath.dtbo"), "-n", "kvpath"]), ("check",)]


def test_fpga_manager_sysfs(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root")
    r = program(app_dir, **b.kwargs())
    assert (r.method, r.overlay_applied) == ("fpga_manager", False)
    assert "overlay" in r.notes[0]
    assert b.events == [("write", f"{MGR}/flags", "0\n"), ("write", f"{MGR}/firmware", "kvpath.bit.bin\n"),
                        ("sleep",), ("sleep",), ("check",)]
    assert (b.root / "lib/firmware/kvpath.bit.bin").read_bytes() == (app_dir / "kvpath.bit.bin").read_bytes()
    assert (b.mgr / "flags").read_text() == "0\n" and (b.mgr / "firmware").read_text() == "kvpath.bit.bin\n"


def test_fpga_manager_never_operating(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root", load_ok=False)
    with pytest.raises(ProgramError, match="state is 'write error' 2 s after writing firmware, expected 'operating'"):
        program(app_dir, **b.kwargs(timeout_s=2.0, poll_s=0.5))
    assert b.events.count(("sleep",)) == 4 and ("check",) not in b.events


def test_no_fpga_manager(tmp_path, app_dir):
    root = tmp_path / "bare"
    root.mkdir()
    with pytest.raises(ProgramError, match="no fpga_manager at .*fpga0"):
        program(app_dir, sysroot=root, runner=None, which=lambda n: None, geteuid=lambda: 0)


def test_not_root(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root", tools={"xmutil"})
    with pytest.raises(ProgramError, match="needs root"):
        program(app_dir, **dict(b.kwargs(), geteuid=lambda: 1000))
    assert b.events == []


@pytest.mark.parametrize("missing", ["kvpath.bit.bin", "kvpath.dtbo", "shell.json"])
def test_incomplete_app_folder(tmp_path, app_dir, missing):
    (app_dir / missing).unlink()
    b = FakeBoard(tmp_path / "root", tools={"xmutil"})
    with pytest.raises(ProgramError, match=f"incomplete: missing {missing}"):
        program(app_dir, **b.kwargs())
    assert b.events == []


def test_check_failure_propagates(tmp_path, app_dir):
    class Mismatch(ValueError):
        pass

    def refuse():
        raise Mismatch("CFG_FORMAT.format: hardware 2, expected 0")

    b = FakeBoard(tmp_path / "root", tools={"xmutil"})
    with pytest.raises(Mismatch, match="CFG_FORMAT"):
        program(app_dir, **dict(b.kwargs(), check=refuse))


def test_forced_method(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root", tools={"xmutil"})
    assert program(app_dir, **b.kwargs(method="fpga_manager")).method == "fpga_manager"
    with pytest.raises(ProgramError, match="dfx-mgr-client is not installed"):
        program(app_dir, **b.kwargs(method="dfx-mgr-client"))
    with pytest.raises(ProgramError, match="method 'jtag'"):
        program(app_dir, **b.kwargs(method="jtag"))


def test_app_already_in_lib_firmware(tmp_path, app_dir):
    b = FakeBoard(tmp_path / "root", tools={"xmutil"})
    installed = b.root / "lib/firmware/xilinx/kvpath"
    installed.parent.mkdir(parents=True)
    app_dir.rename(installed)
    assert program(installed, **b.kwargs()).method == "xmutil"
