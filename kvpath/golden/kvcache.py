"""Engine model of the KV cache (``KVCacheTop``, docs/kvcache.md) at register and stream level.

``KVCacheModel`` answers the same calls as the driver's transport (``kvpath.driver.transport``):
register reads and writes, ``s_axis_kv`` beats in, ``m_axis_kv{p}`` beats out, ``s_axis_cmd``
commands, and the DDR window as the processor sees it. It is the driver's ``model`` backend and the
reference the simulated RTL is held to: the same driver code must leave the same DDR image and read
back the same beats on both.

What it is built from, so nothing is declared twice: the register block is the transaction model
``kvpath.regmap.model.CSRModel`` over the resolved register map (addresses, fields, write streams,
W1C/W1P behaviour); ring state is ``kvpath.golden.ring.RingModel``; the numerics are the golden
quantizer and dequantizer (``kvpath.golden`` for block-scaled formats, ``kvpath.golden.static`` with
the scale cache for static ones); tags and commands are ``kvpath.layout``'s records.

Time is not modelled: a vector is written when its last beat arrives, a command runs when it is
taken, a soft reset is over when the CTRL write returns (STATUS.resetting never reads 1), CYCLES
stays 0. Where the hardware would stall a stream forever (TREADY low) the model raises
``TimeoutError`` naming the reason, as a simulation transport gives up after its timeout.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from kvpath import layout
from kvpath.config import BLOCK_ELEMS, DEFAULT, KVPathConfig
from kvpath.elements import stream_element
from kvpath.golden import frame, static
from kvpath.golden.hadamard import ref_hadamard
from kvpath.golden.ring import RingConfigError, RingModel
from kvpath.layout import Op
from kvpath.regmap import build_map, json_map
from kvpath.regmap.model import OKAY, SLVERR, CSRModel

DECERR = 3  # AXI response of an address nothing answers (outside the model's DDR window)
POS_LIMIT = 2**32 - 1  # the tracker's 32-bit position counter holds one value back (docs/ring.md)


class SlaveError(RuntimeError):
    """The register block answered SLVERR (unmapped address, read-only register, partial WSTRB to
    a write-stream register)."""


class DDRErrorMap:
    """Granules of ``unit`` bytes (the bus width, so one bus beat is all in or all out) that answer
    an error response; writes into them are dropped, reads return the memory's data with the error.
    The same rule as the testbench RAM (``sim/lib/axi_ram.py``)."""

    def __init__(self, unit: int):
        self.unit = unit
        self.granules: dict[int, int] = {}

    def add(self, start: int, nbytes: int, resp: int = SLVERR) -> None:
        if nbytes < 1 or resp not in (SLVERR, DECERR):
            raise ValueError(f"an error range needs nbytes >= 1 and resp SLVERR (2) or DECERR (3), "
                             f"got nbytes={nbytes}, resp={resp}")
        for g in range(start // self.unit, (start + nbytes - 1) // self.unit + 1):
            self.granules[g] = resp

    def clear(self) -> None:
        self.granules.clear()

    def worst(self, start: int, end: int) -> int:
        if not self.granules or end <= start:
            return OKAY
        return max(self.granules.get(g, OKAY) for g in range(start // self.unit, (end - 1) // self.unit + 1))

    def blocked(self, addr: int) -> bool:
        return addr // self.unit in self.granules


@dataclass
class _Ring:
    """The tracker of one (seq, class). ``model`` is None until a CLEAR with a good configuration."""

    model: RingModel | None = None
    cfg_err: bool = False
    slot: int | None = None  # the current token's slot; None: nothing appended since the CLEAR
    refused: bool = False  # the last append was refused: vectors drop until one succeeds


@dataclass
class _Vector:
    """The ``s_axis_kv`` vector in progress: its tag (sampled on the first beat) and its lanes."""

    tag: dict[str, int]
    lanes: list[np.ndarray] = field(default_factory=list)
    frame_error: bool = False


class KVCacheModel:
    """The engine behind a register block, two streams and a DDR window of ``mem_bytes`` bytes at
    ``mem_base`` (absolute AXI addresses; region bases are programmed inside it)."""

    def __init__(self, config: KVPathConfig = DEFAULT, *, mem_bytes: int = 4 << 20, mem_base: int = 0x6000_0000):
        if mem_bytes < 1 or mem_base < 0 or mem_base + mem_bytes > 1 << config.addr_width:
            raise ValueError(f"DDR window [0x{mem_base:x}, +{mem_bytes}) does not fit {config.addr_width}-bit "
                             "addresses")
        self.config = config
        self.format = config.format
        self.mem_base, self.mem_bytes = mem_base, mem_bytes
        self.mem = bytearray(mem_bytes)
        self.errors = DDRErrorMap(config.bus_bytes)
        self.regmap = json_map.to_dict(build_map(config))
        self.csr = CSRModel(self.regmap)
        self._status_fields = {f["name"]: f for f in self._register("STATUS")["fields"]}
        self._counter_ports = [r["fields"][0]["port"] for r in self.regmap["registers"]
                               if r["group"] == "counters" and r["part"] != "hi"]
        self._kv_tag = layout.kv_tag(config)
        self._read_tag = layout.read_tag(config)
        self._command_word = layout.command_word(config)
        self.region_table = [0] * layout.region_count(config)
        self.layer_class = [0] * config.max_layers
        self.scale_table = static.empty_table(config.fmt, config) if self.format.needs_scale_cache else None
        self._reset_engine()

    # --- the register block ------------------------------------------------------------------
    def _register(self, name: str) -> dict:
        return next(r for r in self.regmap["registers"] if r["name"] == name)

    def read32(self, addr: int) -> int:
        self._publish_live_state()
        value, resp = self.csr.read(addr)
        if resp != OKAY:
            raise SlaveError(f"register read at 0x{addr:x} answered SLVERR (no register there)")
        return value

    def write32(self, addr: int, value: int) -> None:
        if self.csr.write(addr, value & 0xFFFF_FFFF) != OKAY:
            raise SlaveError(f"register write of 0x{value:x} at 0x{addr:x} answered SLVERR "
                             "(no writable register there)")
        self._apply_pulses()
        self._apply_stream_beats()

    def _apply_pulses(self) -> None:
        pulses, self.csr.pulses = self.csr.pulses, []
        for port, _ in pulses:
            if port == "soft_reset":
                self._soft_reset()
            elif port == "counter_clear":
                self._clear_counters()

    def _apply_stream_beats(self) -> None:
        handlers = {"region_write": self._region_write, "layer_write": self._layer_write,
                    "cmd_write": self._cmd_write, "scale_write": self._scale_write}
        for port, beats in self.csr.streams.items():
            while beats:
                handlers[port](beats.pop(0))

    def _region_write(self, beat: dict) -> None:
        # A row beyond the table has nowhere to go; the hardware ignores it too.
        if beat["index"] < len(self.region_table):
            base = beat["high"] << 32 | beat["value"]
            self.region_table[beat["index"]] = base & ((1 << self.config.addr_width) - 1)

    def _layer_write(self, beat: dict) -> None:
        if beat["index"] < len(self.layer_class):
            self.layer_class[beat["index"]] = beat["value"]

    def _cmd_write(self, beat: dict) -> None:
        self._commands.append(beat["value"] | beat["high"] << 32)
        self._run_commands()

    def _scale_write(self, beat: dict) -> None:
        if self.scale_table is None:
            self._flag("bad_scale_index")
            return
        refused = static.apply_writes(self.scale_table, beat["index"], beat["value"], self.config.elem)
        if refused.any():
            self._flag("bad_scale_index")

    def _rw(self, port: str) -> int:
        return self.csr.values[port]

    def _flag(self, sticky: str) -> None:
        self.csr.set_sticky(sticky)

    def _count(self, port: str, n: int = 1) -> None:
        self.counts[port] += n

    @property
    def head_dim(self) -> int:
        return self._rw("head_dim")

    @property
    def head_dim_ok(self) -> bool:
        return layout.head_dim_ok(self.config, self.head_dim)

    @property
    def row_bytes(self) -> int:
        return layout.row_bytes(self.config, self.head_dim)

    @property
    def busy(self) -> bool:
        return self._vector is not None or bool(self._commands) or any(self._out)

    @property
    def irq(self) -> bool:
        enabled = self._rw("irq_enable")
        return any(self.csr.sticky[name] and enabled >> f["lsb"] & 1
                   for name, f in self._status_fields.items() if f["access"] == "w1c")

    def _publish_live_state(self) -> None:
        """Copy the engine's live state into the register block's inputs before a read."""
        inputs = self.csr.inputs
        for port in self._counter_ports:
            inputs[port] = self.counts[port]
        inputs["resetting"] = 0
        inputs["busy"] = int(self.busy)
        inputs["head_dim_err"] = int(not self.head_dim_ok)
        ring = self._rings.get((self._rw("sel_seq"), self._rw("sel_cls")), _Ring())
        inputs["ring_n_valid"] = ring.model.n_valid if ring.model else 0
        inputs["ring_configured"] = int(ring.model is not None)
        inputs["ring_cfg_err"] = int(ring.cfg_err)
        inputs["ring_appended"] = ring.model.appended if ring.model else 0

    # --- reset ----------------------------------------------------------------------------------
    def _reset_engine(self) -> None:
        c = self.config
        self._rings = {(s, k): _Ring() for s in range(c.max_seqs) for k in range(c.n_classes)}
        self._vector: _Vector | None = None
        self._beats_in_vector = 0
        self._commands: deque[int] = deque()
        self._out: list[deque] = [deque() for _ in range(c.read_ports)]
        # Per port, the beats each READ still owes, oldest first: it completes when they are taken.
        self._reads_owed: list[deque] = [deque() for _ in range(c.read_ports)]
        self._clear_counters()

    def _clear_counters(self) -> None:
        self.counts = dict.fromkeys(self._counter_ports, 0)

    def _soft_reset(self) -> None:
        # A beat already offered on m_axis_kv{p} stays offered until taken (docs/kvcache.md 6); the
        # rest of the owed read data is drained and dropped. Tables, scales, registers stay.
        offered = [list(q)[:1] for q in self._out]
        self._reset_engine()
        for q, beats in zip(self._out, offered):
            q.extend(beats)

    # --- DDR ------------------------------------------------------------------------------------
    def _in_window(self, addr: int, n: int) -> bool:
        return self.mem_base <= addr and addr + n <= self.mem_base + self.mem_bytes

    def _check_window(self, addr: int, n: int) -> int:
        if n < 0 or not self._in_window(addr, n):
            raise ValueError(f"[0x{addr:x}, +{n}) is outside the DDR window [0x{self.mem_base:x}, "
                             f"+{self.mem_bytes})")
        return addr - self.mem_base

    def mem_write(self, addr: int, data: bytes) -> None:
        offset = self._check_window(addr, len(data))
        self.mem[offset : offset + len(data)] = data

    def mem_read(self, addr: int, n: int) -> bytes:
        offset = self._check_window(addr, n)
        return bytes(self.mem[offset : offset + n])

    def inject_ddr_error(self, addr: int, nbytes: int, resp: int = SLVERR) -> None:
        """Make the bus granules covering [addr, addr + nbytes) answer ``resp`` to the engine."""
        self.errors.add(addr, nbytes, resp)

    def clear_ddr_errors(self) -> None:
        self.errors.clear()

    def _ddr_write(self, addr: int, data: bytes) -> int:
        """The engine's write of one row: the worst response; bytes in error granules are dropped."""
        if not self._in_window(addr, len(data)):
            return DECERR
        resp = self.errors.worst(addr, addr + len(data))
        offset = addr - self.mem_base
        if resp == OKAY:
            self.mem[offset : offset + len(data)] = data
        else:
            for k, byte in enumerate(data):
                if not self.errors.blocked(addr + k):
                    self.mem[offset + k] = byte
        return resp

    def _ddr_read(self, addr: int, n: int) -> tuple[bytes, int]:
        if not self._in_window(addr, n):
            return bytes(n), DECERR
        return self.mem_read(addr, n), self.errors.worst(addr, addr + n)

    # --- s_axis_kv ------------------------------------------------------------------------------
    def _beats_per_vector(self) -> int:
        # A bad HEAD_DIM still frames vectors (they are consumed and dropped), by its beat count.
        return max(1, -(-self.head_dim // self.config.quant_lanes))

    def send_kv(self, beats) -> None:
        beats = list(beats)
        for n, (tdata, tuser, tlast) in enumerate(beats):
            if not self._rw("enable"):
                raise TimeoutError(f"s_axis_kv is not ready: CTRL.enable is 0 ({n} of {len(beats)} beats taken)")
            self._take_kv_beat(int(tdata), int(tuser), bool(tlast), n, len(beats))

    def _take_kv_beat(self, tdata: int, tuser: int, tlast: bool, n: int, total: int) -> None:
        if self._vector is None:
            tag = layout.unpack(self._kv_tag, tuser)
            if tag["append"] and any(self._reads_owed):
                ports = [p for p, owed in enumerate(self._reads_owed) if owed]
                raise TimeoutError(f"s_axis_kv stalls: an append waits until the READs on port(s) {ports} "
                                   f"have been received ({n} of {total} beats taken)")
            self._vector = _Vector(tag)
        lanes = self.config.quant_lanes
        self._vector.lanes.append(np.frombuffer(tdata.to_bytes(2 * lanes, "little"), "<u2"))
        self._beats_in_vector += 1
        last = self._beats_in_vector == self._beats_per_vector()
        if tlast != last:
            self._vector.frame_error = True
        if last:
            vector, self._vector, self._beats_in_vector = self._vector, None, 0
            if vector.frame_error:
                self._flag("frame_error")
                self._count("frame_errors")
            self._store_vector(vector.tag, np.concatenate(vector.lanes))
            self._run_commands()  # a READ may have waited for this vector

    def _drop(self) -> None:
        self._flag("vector_dropped")
        self._count("vectors_dropped")

    def _ring_of(self, tag: dict[str, int]) -> _Ring | None:
        """The ring a vector's tag addresses, or None when the tag is beyond the build or its
        layer's class beyond ``n_classes``."""
        c = self.config
        if tag["seq"] >= c.max_seqs or tag["layer"] >= c.max_layers or tag["head"] >= c.max_kv_heads:
            return None
        return self._rings.get((tag["seq"], self.layer_class[tag["layer"]]))

    def _store_vector(self, tag: dict[str, int], bits: np.ndarray) -> None:
        ring = self._ring_of(tag)
        if not self.head_dim_ok or ring is None:
            self._drop()
            return
        if tag["append"]:
            if ring.model is None or ring.model.appended >= POS_LIMIT:
                ring.refused = True
                self._drop()
                return
            ring.slot, ring.refused = ring.model.append().slot, False
        elif ring.slot is None or ring.refused:
            self._drop()
            return
        vector = bits[: self.head_dim]
        if self.config.rotation:  # the write path's rotation unit, before the quantizer
            vector = ref_hadamard(vector, self.config.rotation)[0].astype(np.uint16)
        row = self._quantize(vector, tag)
        base = self.region_table[layout.region_index(self.config, tag["seq"], tag["layer"], tag["head"], tag["kv"])]
        self._count("elems_quantized", self.head_dim)
        self._count("blocks_written", self.head_dim // BLOCK_ELEMS)
        self._count("ddr_bytes_written", len(row))
        if self._ddr_write(base + ring.slot * self.row_bytes, row) == OKAY:
            self._count("vectors_written")
        else:
            self._flag("ddr_error")
            self._count("ddr_errors")

    def _quantize(self, bits: np.ndarray, tag: dict[str, int]) -> bytes:
        x = bits.view(self._dtype)
        if self.scale_table is None:
            row, n_nonfinite = frame.quantize_report(x, self.format.name)
        else:
            row, n_nonfinite, _ = static.quantize_report(x, self.format.name, self.scale_table, tag["layer"],
                                                         tag["head"], tag["kv"], config=self.config)
        self._nonfinite(n_nonfinite)
        return row.tobytes()

    @property
    def _dtype(self):
        return stream_element(self.config.elem).dtype

    def _nonfinite(self, n: int) -> None:
        if n:
            self._count("nonfinite_elems", n)
            self._flag("nonfinite_seen")

    # --- commands -------------------------------------------------------------------------------
    def send_cmd(self, words) -> None:
        """``s_axis_cmd`` beats (64-bit commands); gated by CTRL.enable like ``s_axis_kv``."""
        words = list(words)
        for n, word in enumerate(words):
            if not self._rw("enable"):
                raise TimeoutError(f"s_axis_cmd is not ready: CTRL.enable is 0 ({n} of {len(words)} commands taken)")
            self._commands.append(int(word))
            self._run_commands()

    def _run_commands(self) -> None:
        # A READ waits for the vector in progress (it must see every vector before it); commands
        # behind it wait in order.
        while self._commands and self._vector is None:
            self._execute(self._commands.popleft())

    def _execute(self, command: int) -> None:
        fields = layout.unpack(self._command_word, command & 0xFFFF_FFFF)
        arg = command >> 32
        op = Op(fields["op"])
        if op == Op.NOP:
            self._count("commands_done")
        elif op == Op.READ:
            self._read(fields)
        else:
            self._ring_command(op, fields, arg)

    def _cmd_error(self) -> None:
        self._flag("cmd_error")
        self._count("cmd_errors")
        self._count("commands_done")

    def _ring_command(self, op: Op, f: dict[str, int], arg: int) -> None:
        ring = self._rings.get((f["seq"], f["cls"]))
        if ring is None:
            self._cmd_error()
            return
        if op == Op.CLEAR:
            self._rings[(f["seq"], f["cls"])] = self._cleared_ring()
        elif ring.model is not None:
            ring.model.evict_upto(arg)
        self._count("commands_done")

    def _cleared_ring(self) -> _Ring:
        try:
            return _Ring(RingModel(self._rw("ring_max_tokens"), self._rw("ring_sinks"), self._rw("ring_window"),
                                   max_tokens=self.config.kv_max_tokens, pos_limit=POS_LIMIT))
        except RingConfigError:
            return _Ring(cfg_err=True)

    def _read(self, f: dict[str, int]) -> None:
        c = self.config
        ring = self._ring_of(f)
        if f["port"] >= c.read_ports or ring is None or ring.model is None or not self.head_dim_ok:
            self._cmd_error()
            return
        beats, failed = [], False
        base = self.region_table[layout.region_index(c, f["seq"], f["layer"], f["head"], f["kv"])]
        for run in self._plan(ring.model):
            rows, resp = self._ddr_read(base + run[0].slot * self.row_bytes, len(run) * self.row_bytes)
            self._count("ddr_bytes_read", len(rows))
            if resp != OKAY:
                failed = True
                self._flag("ddr_error")
                self._count("ddr_errors")
            beats += self._read_beats(run, rows, f)
        if not beats:
            self._count("commands_done")
            return
        tdata, tuser, _ = beats[-1]
        beats[-1] = (tdata, tuser | layout.pack(self._read_tag, error=int(failed)), True)
        self._out[f["port"]].extend(beats)
        self._reads_owed[f["port"]].append(len(beats))

    @staticmethod
    def _plan(ring: RingModel) -> list[list]:
        """Reader runs: the sinks, then the window oldest to newest, split where the ring wraps."""
        order = ring.read_order()
        runs = [[e for e in order if e.pos < ring.n_sink]]
        for e in order[len(runs[0]):]:
            if len(runs) == 1 or e.slot != runs[-1][-1].slot + 1:
                runs.append([])
            runs[-1].append(e)
        return [run for run in runs if run]

    def _read_beats(self, run: list, rows: bytes, f: dict[str, int]) -> list[tuple[int, int, bool]]:
        data = np.frombuffer(rows, np.uint8).reshape(len(run), self.row_bytes)
        values = self._dequantize(data, f).view(np.uint16)
        self._count("blocks_read", len(run) * self.head_dim // BLOCK_ELEMS)
        lanes = self.config.dequant_lanes
        beats = []
        for entry, row in zip(run, values):
            tuser = layout.pack(self._read_tag, pos=entry.pos)
            for chunk in row.reshape(-1, lanes):
                beats.append((int.from_bytes(chunk.astype("<u2").tobytes(), "little"), tuser, False))
        return beats

    def _dequantize(self, data: np.ndarray, f: dict[str, int]) -> np.ndarray:
        if self.scale_table is None:
            values, n_sat, n_bad = frame.dequantize_report(data, self.format.name, self._dtype)
        else:
            values, n_sat, n_bad = static.dequantize_report(data, self.format.name, self.scale_table, f["layer"],
                                                            f["head"], f["kv"], dtype=self._dtype,
                                                            config=self.config)
        self._nonfinite(n_bad)
        if n_sat:
            self._count("saturated_elems", n_sat)
            self._flag("saturated_seen")
        return values

    # --- m_axis_kv{p} ---------------------------------------------------------------------------
    def receive_kv(self, port: int, n_beats: int) -> list[tuple[int, int, bool]]:
        if not 0 <= port < self.config.read_ports:
            raise ValueError(f"read port {port} does not exist (read_ports={self.config.read_ports})")
        queue = self._out[port]
        if n_beats > len(queue):
            raise TimeoutError(f"m_axis_kv{port} offers {len(queue)} beats, {n_beats} were expected")
        beats = [queue.popleft() for _ in range(n_beats)]
        self._complete_reads(port, n_beats)
        return beats

    def _complete_reads(self, port: int, taken: int) -> None:
        owed = self._reads_owed[port]
        while taken and owed:
            step = min(taken, owed[0])
            owed[0] -= step
            taken -= step
            if owed[0] == 0:
                owed.popleft()
                self._count("commands_done")
