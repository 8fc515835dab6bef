import pytest

from tests.boards.support import require_tool


@pytest.fixture
def app_dir(tmp_path):
    """A complete Kria app folder with placeholder contents (nothing here is loaded for real)."""
    d = tmp_path / "apps" / "kvpath"
    d.mkdir(parents=True)
    (d / "kvpath.bit.bin").write_bytes(b"\xff\xff\xff\xff\x66\x55\x99\xaa")
    (d / "kvpath.dtbo").write_bytes(b"\xd0\x0d\xfe\xed")
    (d / "shell.json").write_text('{"shell_type": "XRT_FLAT", "num_slots": "1"}\n')
    return d


@pytest.fixture
def tclsh():
    return require_tool("tclsh", "tcl")


@pytest.fixture
def dtc():
    return require_tool("dtc", "device-tree-compiler")
