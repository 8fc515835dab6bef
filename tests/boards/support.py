"""Shared helpers of the board tests: the generated TCL under tclsh with stub Vivado commands, a
parser for decompiled device trees, synthetic .bit files, fake board trees (sysfs, /dev, firmware)
and a synthetic Verilog header of the engine's Vivado top.

Everything here stands in for something only Vivado or the board has; each helper says which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

STUB = Path(__file__).resolve().parent / "tcl_stub.tcl"
MGR = "sys/class/fpga_manager/fpga0"
BASE = 0xA000_0000


def require_tool(name: str, package: str) -> str:
    """Path of ``name``; skip when it is absent, unless KVPATH_REQUIRE_TOOLS is set (then fail), so a
    machine that is meant to have it (CI, after scripts/bootstrap.sh) cannot pass by skipping."""
    path = shutil.which(name)
    if path:
        return path
    why = f"{name} not installed (Debian package {package}; scripts/bootstrap.sh installs it)"
    if os.environ.get("KVPATH_REQUIRE_TOOLS"):
        pytest.fail(f"{why}, and KVPATH_REQUIRE_TOOLS is set")
    pytest.skip(why)


@dataclass
class StubRun:
    rc: int
    calls: list[dict]
    stdout: str
    stderr: str

    def of(self, cmd: str) -> list[list[str]]:
        return [c["args"] for c in self.calls if c["cmd"] == cmd]


def run_stub(workdir: Path, tcl_text: str, ports, env: dict | None = None,
             sources: tuple[str, ...] = ("rtl/kvpath_axi_top.v",)) -> StubRun:
    """Run ``tcl_text`` as build.tcl in ``workdir`` under tclsh with the Vivado stubs."""
    workdir.mkdir(parents=True, exist_ok=True)
    for s in sources:
        (workdir / s).parent.mkdir(parents=True, exist_ok=True)
        (workdir / s).write_text("// placeholder: the stub never reads it\n")
    (workdir / "build.tcl").write_text(tcl_text)
    (workdir / "ports.txt").write_text("".join(f"{p.name} {p.direction} {p.width}\n" for p in ports))
    (workdir / "run.tcl").write_text(f"source {{{STUB}}}\nsource {{{workdir / 'build.tcl'}}}\n")
    log = workdir / "calls.jsonl"
    log.unlink(missing_ok=True)
    e = dict(os.environ, KVB_STUB_LOG=str(log), KVB_STUB_PORTS=str(workdir / "ports.txt"))
    e.update(env or {})
    r = subprocess.run([require_tool("tclsh", "tcl"), str(workdir / "run.tcl")], cwd=workdir,
                       capture_output=True, text=True, env=e, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return StubRun(r.returncode, calls, r.stdout, r.stderr)


# --- a small parser for `dtc -I dtb -O dts` output ------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(/\*.*?\*/)|("(?:[^"\\]|\\.)*")|(<[^>]*>)|(\[[^\]]*\])|([{};=,])|([^\s{};=,<>"\[]+))', re.S)


def parse_dts(text: str) -> dict:
    """Nested dicts: node name -> {properties and child nodes}. Property values are lists of
    items: str for strings, list[int] for a <cells> group, bytes for [bytes]; True for a boolean."""
    tokens = []
    pos = 0
    text = text.replace("/dts-v1/;", "", 1)
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot tokenize dts at {text[pos:pos + 40]!r}")
        pos = m.end()
        comment, string, cells, byts, punct, word = m.groups()
        if comment:
            continue
        if string is not None:
            tokens.append(("str", bytes(string[1:-1], "utf-8").decode("unicode_escape")))
        elif cells is not None:
            tokens.append(("cells", [int(c, 0) for c in cells[1:-1].split()]))
        elif byts is not None:
            tokens.append(("bytes", bytes.fromhex(byts[1:-1].replace(" ", ""))))
        elif punct:
            tokens.append((punct, punct))
        elif word:
            tokens.append(("word", word))

    def node(i):
        out = {}
        while tokens[i][0] != "}":
            kind, name = tokens[i]
            assert kind == "word", tokens[i]
            if tokens[i + 1][0] == "{":
                child, i = node(i + 2)
                out[name] = child
                assert tokens[i][0] == ";"
                i += 1
            elif tokens[i + 1][0] == ";":
                out[name] = True
                i += 2
            else:
                assert tokens[i + 1][0] == "=", tokens[i:i + 3]
                vals, i = [], i + 2
                while True:
                    kind, value = tokens[i]
                    vals.append(value)
                    i += 1
                    if tokens[i][0] == ",":
                        i += 1
                        continue
                    assert tokens[i][0] == ";", tokens[i]
                    i += 1
                    break
                out[name] = vals
        return out, i + 1

    assert tokens[0] == ("word", "/") and tokens[1][0] == "{"
    root, _ = node(2)
    return root


# --- synthetic .bit files with the real header layout ---------------------------------------------


BIT_MAGIC = b"\x0f\xf0\x0f\xf0\x0f\xf0\x0f\xf0\x00"


def bit_words(n_payload: int = 64, seed: int = 1) -> list[int]:
    """Configuration words laid out like a Vivado bitstream: dummy words, the bus-width pattern,
    the sync word, packets (a type-1 IDCODE write, a type-2 FDRI burst), then DESYNC."""
    import random

    rng = random.Random(seed)
    return ([0xFFFFFFFF] * 8 + [0x000000BB, 0x11220044, 0xFFFFFFFF, 0xFFFFFFFF, 0xAA995566, 0x20000000,
                                0x30018001, 0x04724093, 0x30004000, 0x50000000 | n_payload]
            + [rng.getrandbits(32) for _ in range(n_payload)]
            + [0x30008001, 0x0000000D, 0x20000000, 0x20000000])


def make_bit(words: list[int] | None = None, *, part: str = "xck26-sfvc784-2LV-c",
             data: bytes | None = None, length: int | None = None, magic: bytes = BIT_MAGIC,
             design: str = "kvpath_bd_wrapper;UserID=0XFFFFFFFF;Version=2023.2") -> bytes:
    """A .bit file: 00 09 <magic> 00 01, fields a..d as 2-byte-length NUL-terminated strings,
    'e' + 4-byte big-endian length, then the big-endian configuration words."""
    if data is None:
        data = struct.pack(f">{len(words or bit_words())}I", *(words or bit_words()))

    def field(key: str, text: str) -> bytes:
        raw = text.encode() + b"\x00"
        return key.encode() + struct.pack(">H", len(raw)) + raw

    header = (struct.pack(">H", len(magic)) + magic + b"\x00\x01" + field("a", design) + field("b", part)
              + field("c", "2025/01/31") + field("d", "12:34:56")
              + b"e" + struct.pack(">I", len(data) if length is None else length))
    return header + data


# --- the engine's Vivado top, synthesized from the contract ----------------------------------------

def verilog_for(ports) -> str:
    """A synthetic ANSI Verilog header of ``kvpath_axi_top`` with the given ports (from
    ``reference_ports``): the contract written down, not the engine's Verilog. Its body is empty:
    nothing here synthesizes it."""
    decls = ",\n".join(f"  {p.direction} wire [{p.width - 1}:0] {p.name}" for p in ports)
    return f"// synthetic: kvpath_axi_top's port contract, no logic\nmodule kvpath_axi_top (\n{decls}\n);\nendmodule\n"


# --- a fake board: fpga_manager, UIO, u-dma-buf, as files under a sysroot --------------------------

class FakeBoard:
    """A sysroot with an fpga_manager whose state follows what is written to it. Commands, sysfs
    writes, sleeps and the check are recorded in ``events``, in order."""

    def __init__(self, root: Path, *, load_ok: bool = True, tools=(), rc=None, settle_polls: int = 2):
        self.root = root
        self.mgr = root / MGR
        self.mgr.mkdir(parents=True)
        for name, text in (("flags", "0\n"), ("firmware", "\n"), ("state", "operating\n"),
                           ("name", "Xilinx ZynqMP FPGA Manager\n")):
            (self.mgr / name).write_text(text)
        self.load_ok = load_ok
        self.tools = set(tools)
        self.rc = rc or {}
        self.settle_polls = settle_polls
        self.events = []       # ("write", path, text) | ("cmd", argv) | ("check",) | ("sleep",)
        self.now = 0.0

    def on_write(self, path, text):
        self.events.append(("write", str(Path(path).relative_to(self.root)), text))
        if Path(path).name == "firmware":
            self.state("write" if self.load_ok else "write error")

    def runner(self, argv):
        self.events.append(("cmd", list(argv)))
        rc = self.rc.get(argv[1] if len(argv) > 1 else argv[0], 0)
        if argv[:2] == ["xmutil", "loadapp"] and rc == 0 and not self.load_ok:
            self.state("write error")
        return subprocess.CompletedProcess(argv, rc, "out", "err: xmutil says no" if rc else "")

    def which(self, name):
        return f"/usr/bin/{name}" if name in self.tools else None

    def sleep(self, s):
        self.events.append(("sleep",))
        self.now += s
        self.settle_polls -= 1
        if self.load_ok and self.settle_polls <= 0:
            self.state("operating")

    def clock(self):
        return self.now

    def check(self):
        self.events.append(("check",))

    def state(self, value):
        (self.mgr / "state").write_text(value + "\n")

    def kwargs(self, **extra):
        return dict(sysroot=self.root, check=self.check, runner=self.runner, which=self.which,
                    geteuid=lambda: 0, on_write=self.on_write, sleep=self.sleep, clock=self.clock, **extra)


def fake_uio(root: Path, entries: dict[int, tuple[str, int, int]]) -> None:
    """/sys/class/uio/uioN (name, map0 addr and size) and /dev/uioN as a regular file of that size."""
    for n, (name, addr, size) in entries.items():
        d = root / f"sys/class/uio/uio{n}"
        (d / "maps/map0").mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "maps/map0/addr").write_text(f"0x{addr:016x}\n")
        (d / "maps/map0/size").write_text(f"0x{size:016x}\n")
        (root / "dev").mkdir(exist_ok=True)
        (root / f"dev/uio{n}").write_bytes(bytes(size))


def fake_udmabuf(root: Path, name="udmabuf_kvpath", phys=0x6F80_0000, size=1 << 20) -> Path:
    """/sys/class/u-dma-buf/<name> (phys_addr, size, the sync files) and /dev/<name> as a file."""
    d = root / f"sys/class/u-dma-buf/{name}"
    d.mkdir(parents=True)
    (d / "phys_addr").write_text(f"0x{phys:016x}\n")
    (d / "size").write_text(f"{size}\n")
    for f in ("sync_offset", "sync_size", "sync_direction", "sync_for_cpu", "sync_for_device"):
        (d / f).write_text("0\n")
    (root / "dev").mkdir(exist_ok=True)
    (root / f"dev/{name}").write_bytes(bytes(size))
    return d


def burn_identity(dev: Path, regmap: dict, config) -> None:
    """Write the constant fields (ID, VERSION, configuration) of ``config`` into a fake UIO file
    where the hardware would answer them: what a bitstream of that build would read back."""
    from kvpath.regmap import map as regmap_decl

    data = bytearray(dev.read_bytes())
    for r in regmap["registers"]:
        word = 0
        for f in r["fields"]:
            if f["value_from"]:
                word |= getattr(regmap_decl, f["value_from"])(config) << f["lsb"]
        if word:
            data[r["offset"]:r["offset"] + 4] = word.to_bytes(4, "little")
    dev.write_bytes(bytes(data))


# --- a fake AXI DMA (plumbing: stands in for PG021's direct register mode, not for the IP) -------------

class FakeAxiDma:
    """The AXI DMA's register window as the driver sees it, for plumbing tests: every access goes to
    ``regs`` (the fake UIO device's file, mapped as on the board), every write is logged in
    ``writes``, and the register behaviour of direct register mode is emulated: DMACR.Reset clears
    the channel registers and itself, RS clears DMASR.Halted, IOC_Irq/Err_Irq clear when written 1,
    writing MM2S_LENGTH reads that many bytes at MM2S_SA from the u-dma-buf file and hands the
    unframed beats to ``engine.send_kv``, writing S2MM_LENGTH takes ``engine``'s port-0 beats up to
    the first TLAST, frames them as HeaderInsert does (``segment``) and writes them at S2MM_DA, with
    the byte count in S2MM_LENGTH. Either sets DMASR Idle and IOC_Irq. ``fail`` = {"MM2S"|"S2MM": DMASR
    error bits} makes that channel's next transfer end in those errors (Halted, Err_Irq) instead."""

    def __init__(self, regs, buf_file: Path, buf_phys: int, engine, beat_bytes: tuple[int, int], segment: int,
                 fail: dict | None = None):
        from kvpath.driver import board as b

        self.b, self.regs, self.engine = b, regs, engine
        self.buf_file, self.buf_phys = buf_file, buf_phys
        self.beat_in, self.beat_out = beat_bytes
        self.segment = segment
        self.fail = dict(fail or {})
        self.writes: list[tuple[int, int]] = []
        self.transfers: list[tuple[str, int, int]] = []
        self.close = regs.close
        for sr in (b.MM2S_DMASR, b.S2MM_DMASR):
            regs.write32(sr, b.DMASR_HALTED)

    def read32(self, offset: int) -> int:
        return self.regs.read32(offset)

    def write32(self, offset: int, value: int) -> None:
        b, r = self.b, self.regs
        self.writes.append((offset, value))
        if offset in (b.MM2S_DMACR, b.S2MM_DMACR):
            if value & b.DMACR_RESET:   # resets both channels; reads back 0 once done
                for base in (0x00, 0x30):
                    for reg in range(base, base + 0x30, 4):
                        r.write32(reg, 0)
                    r.write32(base + 4, b.DMASR_HALTED)
                return
            r.write32(offset, value)
            sr = offset + 4
            r.write32(sr, (r.read32(sr) & ~b.DMASR_HALTED) | (0 if value & b.DMACR_RS else b.DMASR_HALTED))
        elif offset in (b.MM2S_DMASR, b.S2MM_DMASR):
            r.write32(offset, r.read32(offset) & ~(value & 0x7000))
        elif offset == b.MM2S_LENGTH:
            r.write32(offset, value)
            self._mm2s(value)
        elif offset == b.S2MM_LENGTH:
            r.write32(offset, value)
            self._s2mm(value)
        else:
            r.write32(offset, value)

    def _addr(self, reg: int) -> int:
        return self.regs.read32(reg) | self.regs.read32(reg + 4) << 32

    def _finish(self, sr: int, channel: str) -> bool:
        b, r = self.b, self.regs
        status = r.read32(sr) & ~b.DMASR_IDLE
        if channel in self.fail:
            r.write32(sr, status | self.fail.pop(channel) | b.DMASR_ERR_IRQ | b.DMASR_HALTED)
            return False
        r.write32(sr, status | b.DMASR_IDLE | b.DMASR_IOC_IRQ)
        return True

    def _mm2s(self, n: int) -> None:
        from kvpath.hdl.top.stream_bridge import unframe

        b = self.b
        addr = self._addr(b.MM2S_SA)
        self.transfers.append(("MM2S", addr, n))
        if not self._finish(b.MM2S_DMASR, "MM2S"):
            return
        with open(self.buf_file, "rb") as f:
            f.seek(addr - self.buf_phys)
            data = f.read(n)
        w = self.beat_in
        self.engine.send_kv(unframe([int.from_bytes(data[k:k + w], "little") for k in range(0, n, w)]))

    def _s2mm(self, n: int) -> None:
        from kvpath.hdl.top.stream_bridge import frame

        b, r = self.b, self.regs
        addr = self._addr(b.S2MM_DA)
        self.transfers.append(("S2MM", addr, n))
        queue = self.engine._out[0]          # the engine model's port-0 beats (plumbing only)
        ends = [k for k, beat in enumerate(queue) if beat[2]]
        if not ends:
            r.write32(b.S2MM_DMASR, r.read32(b.S2MM_DMASR) & ~b.DMASR_IDLE)   # waits for a TLAST
            return
        words = frame(self.engine.receive_kv(0, ends[0] + 1), self.segment)
        data = b"".join(w.to_bytes(self.beat_out, "little") for w in words)
        if len(data) > n:
            self.fail.setdefault("S2MM", 1 << 4)    # DMAIntErr: a packet longer than the buffer
        if not self._finish(b.S2MM_DMASR, "S2MM"):
            return
        with open(self.buf_file, "r+b") as f:
            f.seek(addr - self.buf_phys)
            f.write(data)
        r.write32(b.S2MM_LENGTH, len(data))


class ModelRegisters:
    """The engine model's register block behind the ``MappedRegisters`` interface (plumbing tests)."""

    def __init__(self, model):
        self.model = model

    def read32(self, offset: int) -> int:
        return self.model.read32(offset)

    def write32(self, offset: int, value: int) -> None:
        self.model.write32(offset, value)

    def close(self) -> None:
        pass
