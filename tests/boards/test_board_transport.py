"""Plumbing tests for the driver's board backend (kvpath.driver.board): regular files stand in for
/dev/uioN, /dev/mem and /dev/udmabuf*, and plain files for sysfs. They check paths, offsets, byte
order, bounds checks and the cache-maintenance writes; they cannot show anything about real device
memory, caches or the interrupt.

The K/V stream tests add a fake AXI DMA (tests/boards/support.py ``FakeAxiDma``): a model of
PG021's direct-register-mode behaviour over the register file, feeding an engine model. They check
the driver's register sequence, staging, framing and error handling against that model, not
against the IP."""

import re

import numpy as np
import struct
import sys
import types

import pytest

from kvpath.config import KVPathConfig
from kvpath.driver import board as transport
from kvpath.driver.transport import check_transport
from kvpath.golden.kvcache import KVCacheModel
from kvpath.hdl.top.stream_bridge import frame, unpack_header
from tests.boards.support import BASE, FakeAxiDma, ModelRegisters, fake_udmabuf, fake_uio


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


# --- K/V streams through the AXI DMA (plumbing: a fake DMA model over the register file) -------------

DMA_CONFIG = KVPathConfig(fmt="q8_0", max_layers=2, max_kv_heads=2, max_head_dim=64, kv_max_tokens=16)
KV_BYTES, STAGING, PHYS = 1 << 16, 1 << 16, 0x6F80_0000
SEGMENT = DMA_CONFIG.max_head_dim // DMA_CONFIG.dequant_lanes


class SyncLog:
    """Records the u-dma-buf's cache maintenance calls (and still makes them)."""

    def __init__(self, memory):
        self.calls = []
        for name in ("sync_for_device", "sync_for_cpu"):
            real = getattr(memory, name)
            setattr(memory, name, self._wrap(name, real))

    def _wrap(self, name, real):
        def call(offset=0, length=None):
            self.calls.append((name, offset, length))
            real(offset, length)
        return call


def dma_board(tmp_path, fail=None, timeout_s=0.5):
    """A BoardTransport whose registers are an engine model's, whose memory is a fake u-dma-buf file
    and whose DMA is FakeAxiDma over the fake kvpath_dma UIO file feeding that same model."""
    fake_uio(tmp_path, {0: ("kvpath", BASE, 0x10000), 1: ("kvpath_dma", 0xA001_0000, 0x10000)})
    fake_udmabuf(tmp_path, phys=PHYS, size=KV_BYTES + STAGING)
    engine = KVCacheModel(DMA_CONFIG, mem_bytes=KV_BYTES, mem_base=PHYS)
    fake = FakeAxiDma(transport.open_uio("kvpath_dma", tmp_path), tmp_path / "dev/udmabuf_kvpath", PHYS, engine,
                      (2 * DMA_CONFIG.quant_lanes, 2 * DMA_CONFIG.dequant_lanes), SEGMENT, fail)
    dma = transport.AxiDma(fake, timeout_s=timeout_s)
    dma.reset()
    dma.start()
    memory = transport.UdmaBuf("udmabuf_kvpath", tmp_path)
    io = transport.BoardTransport(ModelRegisters(engine), memory, dma, staging=STAGING)
    return io, engine, fake, SyncLog(memory)


def test_dma_staging_split_and_register_sequence(tmp_path):
    from kvpath.regmap import build_map

    b = transport
    io, engine, fake, syncs = dma_board(tmp_path)
    with io:
        check_transport(io)
        # KV memory first, then the staging area: MM2S half, S2MM half
        assert (io.mem_base, io.mem_bytes) == (PHYS, KV_BYTES)
        assert (io.tx_offset, io.rx_offset, io.staging_half) == (KV_BYTES, KV_BYTES + STAGING // 2, STAGING // 2)
        assert io.beat_bytes() == (32, 32)                       # from CFG_LANES (16 lanes each way)
        assert fake.writes == [(b.MM2S_DMACR, b.DMACR_RESET), (b.MM2S_DMACR, b.DMACR_RS), (b.S2MM_DMACR, b.DMACR_RS)]
        with pytest.raises(b.WindowError, match="outside the KV memory"):
            io.mem_write(PHYS + KV_BYTES, b"x")                  # the staging area is not KV memory
        engine.write32(build_map(DMA_CONFIG).register("CTRL").offset, 1)
        del fake.writes[:]
        # beats the driver would never send (a tag change without TLAST, a trailing beat without
        # TLAST) are framed all the same: three segments, exactly these bytes
        tag = 0b1101
        beats = [(0x1000 + k, tag, k % 4 == 3) for k in range(8)] + [(0x2000, tag + 2, False)]
        io.send_kv(beats)
        words = frame(beats)
        assert [unpack_header(words[k]) for k in (0, 5, 10)] == [(tag, 4, True), (tag, 4, True), (tag + 2, 1, False)]
        n = len(words) * 32
        staged = (tmp_path / "dev/udmabuf_kvpath").read_bytes()[KV_BYTES:KV_BYTES + n]
        assert staged == b"".join(w.to_bytes(32, "little") for w in words)
        assert fake.writes == [(b.MM2S_DMASR, 0x5000), (b.MM2S_SA, PHYS + KV_BYTES), (b.MM2S_SA_MSB, 0),
                               (b.MM2S_LENGTH, n), (b.MM2S_DMASR, 0x1000)]
        assert syncs.calls == [("sync_for_device", KV_BYTES, n)]
        # the register file holds what the driver wrote, as the device window would
        raw = (tmp_path / "dev/uio1").read_bytes()
        assert struct.unpack_from("<I", raw, b.MM2S_SA)[0] == PHYS + KV_BYTES
        assert struct.unpack_from("<I", raw, b.MM2S_LENGTH)[0] == n


def test_dma_send_and_receive_round_trip(tmp_path):
    """KVCache on the board transport (fake DMA feeding an engine model) and on a plain engine model,
    call for call: the same reads; the exact register writes of a transfer; the staged bytes."""
    from kvpath.driver.kvcache import KVCache

    b = transport
    io, engine, fake, syncs = dma_board(tmp_path)
    ref = KVCacheModel(DMA_CONFIG, mem_bytes=KV_BYTES, mem_base=PHYS)
    rng = np.random.default_rng(7)
    with io:
        caches = [KVCache(io, DMA_CONFIG), KVCache(ref, DMA_CONFIG)]
        for c in caches:
            c.configure(layers=2, kv_heads=2, head_dim=64)
        del fake.writes[:], fake.transfers[:], syncs.calls[:]
        for t in range(6):
            k = rng.standard_normal((2, 2, 64)).astype(np.float16)
            v = rng.standard_normal((2, 2, 64)).astype(np.float16)
            for c in caches:
                c.append(0, k, v)
            if t == 0:
                # one MM2S transfer per token: 8 vectors of 4 beats, each behind its header
                (kind, addr, n), = fake.transfers
                assert (kind, addr, n) == ("MM2S", PHYS + KV_BYTES, 8 * 5 * 32)
                assert fake.writes == [(b.MM2S_DMASR, 0x5000), (b.MM2S_SA, (PHYS + KV_BYTES) & 0xFFFF_FFFF),
                                       (b.MM2S_SA_MSB, 0), (b.MM2S_LENGTH, n), (b.MM2S_DMASR, 0x1000)]
                assert syncs.calls == [("sync_for_device", KV_BYTES, n)]      # cleaned before MM2S starts
                staged = (tmp_path / "dev/udmabuf_kvpath").read_bytes()[KV_BYTES:KV_BYTES + n]
                words = [int.from_bytes(staged[j:j + 32], "little") for j in range(0, n, 32)]
                assert words == frame(caches[1]._token_beats(0, k, v))
                assert all(unpack_header(words[j])[1:] == (4, True) for j in range(0, len(words), 5))
        for c in caches:
            c.flush()
        del fake.writes[:], fake.transfers[:], syncs.calls[:]
        for layer in range(2):
            for head in range(2):
                for kv in (0, 1):
                    got, want = (c.read(0, layer, head, kv) for c in caches)
                    assert np.array_equal(got[0].view(np.uint16), want[0].view(np.uint16))
                    assert list(got[1]) == list(want[1])
        # each READ: S2MM armed once, at the start of the S2MM half, 2 n beats of buffer
        s2mm = [t for t in fake.transfers if t[0] == "S2MM"]
        assert len(s2mm) == 8 and all(t[1] == PHYS + KV_BYTES + STAGING // 2 for t in s2mm)
        n_beats = len(caches[1].ring(0, layer=0).read_order()) * 4
        first = fake.writes[fake.writes.index((b.S2MM_DMASR, 0x5000)):][:5]
        assert first == [(b.S2MM_DMASR, 0x5000), (b.S2MM_DA, (PHYS + KV_BYTES + STAGING // 2) & 0xFFFF_FFFF),
                         (b.S2MM_DA_MSB, 0), (b.S2MM_LENGTH, 2 * n_beats * 32), (b.S2MM_DMASR, 0x1000)]
        rx = KV_BYTES + STAGING // 2
        got_bytes = n_beats // 4 * 5 * 32
        assert syncs.calls[:2] == [("sync_for_device", rx, 2 * n_beats * 32), ("sync_for_cpu", rx, got_bytes)]
        assert bytes(engine.mem) == bytes(ref.mem)


def test_dma_errors_name_the_register_bits(tmp_path):
    b = transport
    io, engine, fake, _ = dma_board(tmp_path, fail={"MM2S": 1 << 5}, timeout_s=0.05)
    with io:
        with pytest.raises(b.DMAError, match=r"MM2S_DMASR = 0x000040[0-9a-f]{2}: DMASlvErr \(bit 5: SLVERR"):
            io.send_kv([(1, 0, True)])
        assert (b.MM2S_DMACR, b.DMACR_RESET) in fake.writes[-4:]         # reset and restarted
        # S2MM: nothing to receive -> a timeout (the driver names a refused READ from it), then reset
        del fake.writes[:]
        with pytest.raises(TimeoutError, match="S2MM_DMASR.Idle"):
            io.receive_kv(0, 4)
        assert fake.writes[-3:] == [(b.MM2S_DMACR, b.DMACR_RESET), (b.MM2S_DMACR, b.DMACR_RS),
                                    (b.S2MM_DMACR, b.DMACR_RS)]
        with pytest.raises(NotImplementedError, match="read port 1 has no stream path"):
            io.receive_kv(1, 4)
        with pytest.raises(ValueError, match="does not fit the 32768-byte S2MM staging area"):
            io.receive_kv(0, 1024)
        # a packet longer than the armed buffer: DMAIntErr
        engine._out[0].extend([(k, 5, k == 9) for k in range(10)])
        with pytest.raises(b.DMAError, match=r"S2MM_DMASR = .*DMAIntErr \(bit 4"):
            io.receive_kv(0, 2)


def test_open_board_finds_or_requires_the_dma(tmp_path):
    fake_uio(tmp_path, {0: ("kvpath", BASE, 0x10000)})
    fake_udmabuf(tmp_path, size=1 << 16)
    with transport.open_board(sysroot=tmp_path) as io:
        assert io.dma is None and io.mem_bytes == 1 << 16
    with pytest.raises(transport.DeviceNotFound, match="no UIO device named 'kvpath_dma'"):
        transport.open_board(sysroot=tmp_path, dma=True)


def test_dma_send_splits_at_segment_boundaries(tmp_path):
    """More framed words than the MM2S half holds: several transfers, each starting with a header."""
    from kvpath.regmap import build_map

    io, engine, fake, _ = dma_board(tmp_path)
    with io:
        engine.write32(build_map(DMA_CONFIG).register("CTRL").offset, 1)
        beats = [(k, k // 4 % 7, k % 4 == 3) for k in range(4 * 300)]     # 300 vectors: 1500 words
        io.send_kv(beats)
        sizes = [n for kind, _, n in fake.transfers if kind == "MM2S"]
        half_words = STAGING // 2 // 32
        assert sizes == [half_words // 5 * 5 * 32, (1500 - half_words // 5 * 5) * 32]
        assert all(addr == PHYS + KV_BYTES for _, addr, _ in fake.transfers)
