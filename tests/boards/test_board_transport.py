"""Plumbing tests for the driver's board backend (kvpath.driver.board): regular files stand in for
/dev/uioN, /dev/mem and /dev/udmabuf*, and plain files for sysfs. They check paths, offsets, byte
order, bounds checks and the cache-maintenance writes; they cannot show anything about real device
memory, caches or the interrupt."""

import re
import struct
import sys
import types

import pytest

from kvpath.driver import board as transport
from kvpath.driver.transport import check_transport
from tests.boards.support import BASE, fake_udmabuf, fake_uio


def test_uio_found_by_name_and_words_are_little_endian(tmp_path):
    fake_uio(tmp_path, {0: ("axi-dma", 0xA001_0000, 0x1000), 3: ("kvpath", BASE, 0x10000)})
    dev, addr, size = transport.find_uio("kvpath", tmp_path)
    assert (dev, addr, size) == (tmp_path / "dev/uio3", BASE, 0x10000)
    with transport.open_uio("kvpath", tmp_path) as regs:
        regs.write32(0x40, 0x1234_5678)
        regs.write32(0xFFFC, 0xFFFF_FFFF)
        assert regs.read32(0x40) == 0x1234_5678
    raw = (tmp_path / "dev/uio3").read_bytes()
    assert raw[0x40:0x44] == struct.pack("<I", 0x1234_5678) and raw[0xFFFC:] == b"\xff" * 4


@pytest.mark.parametrize("call, words", [
    (lambda r: r.read32(0x10000), "offset 0x10000 (+4 bytes) is outside window 'kvpath' [0x0, 0x10000) at physical 0xa0000000"),
    (lambda r: r.write32(0xFFFE, 0), "outside window"),
    (lambda r: r.read32(-4), "outside window"),
    (lambda r: r.read32(0x42), "offset 0x42 is not 4-byte aligned"),
])
def test_register_bounds(tmp_path, call, words):
    fake_uio(tmp_path, {0: ("kvpath", BASE, 0x10000)})
    with transport.open_uio("kvpath", tmp_path) as regs, pytest.raises(transport.WindowError, match=re.escape(words)):
        call(regs)


def test_register_value_range(tmp_path):
    fake_uio(tmp_path, {0: ("kvpath", BASE, 0x1000)})
    with transport.open_uio("kvpath", tmp_path) as regs, pytest.raises(ValueError, match="not a 32-bit value"):
        regs.write32(0, 1 << 32)


def test_uio_missing(tmp_path):
    fake_uio(tmp_path, {0: ("axi-dma", BASE, 0x1000)})
    with pytest.raises(transport.DeviceNotFound, match=r"no UIO device named 'kvpath'.*uio0=axi-dma.*of_id=generic-uio"):
        transport.open_uio("kvpath", tmp_path)


def test_devmem_at_a_physical_address(tmp_path):
    (tmp_path / "dev").mkdir()
    mem = tmp_path / "dev/mem"
    with open(mem, "wb") as f:
        f.truncate(BASE + 0x20000)  # sparse
    with transport.open_devmem(BASE + 0x100, 0x200, tmp_path) as regs:   # not page aligned on purpose
        regs.write32(0x8, 0xCAFE_F00D)
        with pytest.raises(transport.WindowError, match="outside window"):
            regs.read32(0x200)
    with open(mem, "rb") as f:
        f.seek(BASE + 0x108)
        assert f.read(4) == struct.pack("<I", 0xCAFE_F00D)


def test_udmabuf_maps_and_syncs(tmp_path):
    sysd = fake_udmabuf(tmp_path)
    with transport.UdmaBuf("udmabuf_kvpath", tmp_path) as buf:
        assert (buf.physical_address, buf.size) == (0x6F80_0000, 1 << 20)
        buf.write(0x1000, b"kvcache!")
        assert buf.read(0x1000, 8) == b"kvcache!"
        buf.sync_for_device(0x1000, 0x2000)
        assert [(sysd / f).read_text() for f in ("sync_offset", "sync_size", "sync_direction", "sync_for_device")] \
            == ["4096\n", "8192\n", "1\n", "1\n"]
        buf.sync_for_cpu()
        assert [(sysd / f).read_text() for f in ("sync_offset", "sync_size", "sync_direction", "sync_for_cpu")] \
            == ["0\n", f"{1 << 20}\n", "2\n", "1\n"]
        with pytest.raises(transport.WindowError, match="offset 0xffffc \\(\\+8 bytes\\) is outside window 'udmabuf_kvpath'"):
            buf.write(0xFFFFC, b"12345678")
        with pytest.raises(transport.WindowError):
            buf.sync_for_cpu(0, (1 << 20) + 1)
    assert (tmp_path / "dev/udmabuf_kvpath").read_bytes()[0x1000:0x1008] == b"kvcache!"


def test_kv_buffer_missing_without_pynq(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynq", None)   # import pynq -> ImportError
    with pytest.raises(transport.DeviceNotFound, match="u-dma-buf module"):
        transport.open_kv_buffer("udmabuf_kvpath", sysroot=tmp_path)


def test_kv_buffer_falls_back_to_pynq(tmp_path, monkeypatch):
    calls = []

    class FakeAlloc(bytearray):
        physical_address = 0x7000_0000

        def __getitem__(self, s):
            return memoryview(bytes(bytearray.__getitem__(self, s)))

        def flush(self):
            calls.append("flush")

        def invalidate(self):
            calls.append("invalidate")

        def freebuffer(self):
            calls.append("free")

    fake = types.SimpleNamespace(allocate=lambda shape, dtype: FakeAlloc(shape[0]))
    monkeypatch.setitem(sys.modules, "pynq", fake)
    buf = transport.open_kv_buffer("udmabuf_kvpath", size=4096, sysroot=tmp_path)
    assert isinstance(buf, transport.PynqBuffer) and buf.physical_address == 0x7000_0000
    buf.write(8, b"abc")
    assert buf.read(8, 3) == b"abc"
    buf.sync_for_device()
    buf.sync_for_cpu()
    with pytest.raises(transport.WindowError):
        buf.read(4095, 2)
    buf.close()
    assert calls == ["flush", "invalidate", "free"]


def test_board_transport_is_a_driver_transport(tmp_path):
    fake_uio(tmp_path, {0: ("kvpath", BASE, 0x10000)})
    sysd = fake_udmabuf(tmp_path, phys=0x6F80_0000, size=1 << 16)
    with transport.open_board(sysroot=tmp_path) as io:
        check_transport(io)
        assert (io.mem_base, io.mem_bytes) == (0x6F80_0000, 1 << 16)
        io.write32(0x8, 0xA5A5_0001)
        assert io.read32(0x8) == 0xA5A5_0001
        io.mem_write(0x6F80_0100, b"block!")
        # written, then cleaned over exactly that range before the engine may read it
        assert [(sysd / f).read_text() for f in ("sync_offset", "sync_size", "sync_direction", "sync_for_device")] \
            == ["256\n", "6\n", "1\n", "1\n"]
        assert io.mem_read(0x6F80_0100, 6) == b"block!"
        # invalidated over the range before the CPU reads it
        assert [(sysd / f).read_text() for f in ("sync_offset", "sync_size", "sync_direction", "sync_for_cpu")] \
            == ["256\n", "6\n", "2\n", "1\n"]
        with pytest.raises(transport.WindowError, match=r"physical address 0x6f810000 \(\+1 bytes\) is outside the KV memory"):
            io.mem_write(0x6F81_0000, b"x")
        with pytest.raises(transport.WindowError, match="outside the KV memory"):
            io.mem_read(0x6F7F_FFFF, 2)


def test_board_streams_are_not_reachable_and_say_why(tmp_path):
    fake_uio(tmp_path, {0: ("kvpath", BASE, 0x1000)})
    fake_udmabuf(tmp_path, size=1 << 12)
    with transport.open_board(sysroot=tmp_path) as io:
        with pytest.raises(NotImplementedError, match="send_kv: .*ties s_axis_kv off.*mem_write"):
            io.send_kv([(0, 0, True)])
        with pytest.raises(NotImplementedError, match="receive_kv: .*m_axis_kv\\* open"):
            io.receive_kv(0, 1)


def test_devmem_fallback_when_there_is_no_uio(tmp_path):
    (tmp_path / "dev").mkdir()
    with open(tmp_path / "dev/mem", "wb") as f:
        f.truncate(BASE + 0x10000)
    fake_udmabuf(tmp_path, size=1 << 12)
    with pytest.raises(transport.DeviceNotFound, match="no UIO device named 'kvpath'"):
        transport.open_board(sysroot=tmp_path)
    with transport.open_board(sysroot=tmp_path, devmem=(BASE, 0x10000)) as io:
        io.write32(0x10, 7)
    with open(tmp_path / "dev/mem", "rb") as f:
        f.seek(BASE + 0x10)
        assert f.read(4) == struct.pack("<I", 7)
