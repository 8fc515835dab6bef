"""The KV cache top level (docs/kvcache.md): register block, tables, engine, read ports, AXI4 masters.

``KVCacheTop(config)``, Verilog module ``kvpath_kvcache``. Ports:

* ``s_axil_*``: the register block's AXI4-Lite slave (``hdl/ctrl/csr.py``), passed through by name.
* ``s_axis_kv``: K/V vectors in (``{data, user: kv_tag, last}``); ``s_axis_cmd``: 64-bit commands.
* ``m_axis_kv{p}``: read port ``p``'s dequantized rows (``{data, user: read_tag, last}``).
* ``m_axi{n}``: AXI4 masters; master 0 carries the write path and read port 0, masters 1.. the
  other read ports (read channels only).
* ``memset``: bulk scale-cache writes (as in ``KVPathTop``; block-scaled builds refuse them).
* ``irq``: OR of the STATUS sticky bits enabled in IRQ_ENABLE.

Static-scale formats: the scale constant cache (``ScaleCache``) sits here, outside the soft reset.
Its one write port takes the register block's SCALE_DATA writes and ``memset`` (merged by
``merge_scale_writes``: a register write wins and ``memset`` waits that clock); a refused write sets
STATUS.bad_scale_index. Every reader has a copy of its own with one synchronous read port, so every
datapath reads its scales every clock: the engine's quantizer (reciprocals) and read port 0 share
the first ``ScaleCache`` (two copies), read ports 1.. each get a ``ScaleCache`` with only a
dequantizer copy, written in step with the first (same write, same refusal). Cost: one more
``entries x 16``-bit memory per read port beyond the first.

Soft reset (CTRL.soft_reset): STATUS.resetting rises, intake stops and the movers drain; once the
writer and every read port are idle (no burst owed, no output beat offered) the engine, the read
ports and the counters are reset for one clock. The register block, the tables and the scale cache
are outside that reset.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from kvpath import layout
from kvpath.config import BLOCK_ELEMS, DEFAULT, KVPathConfig

from kvpath.hdl.ctrl.csr import CSRBlock
from kvpath.hdl.ddr.axi4 import AXI4Signature, connect_split
from kvpath.hdl.ddr.engine import KVEngine, kv_layout, log2
from kvpath.hdl.ddr.read_port import ReadPort, out_layout
from kvpath.hdl.ddr.tables import READERS, Tables
from kvpath.hdl.static.cache import ScaleCache
from kvpath.hdl.static.write_port import ScaleWrite
from kvpath.hdl.top.counters import EngineCounters
from kvpath.hdl.top.top import AXIL_PREFIX, build_scale_cache, merge_scale_writes

ENGINE_EVENTS = ("vector_dropped", "frame_error", "cmd_error")


class KVCacheTop(wiring.Component):
    def __init__(self, config: KVPathConfig = DEFAULT):
        self.config = c = config
        self.csr = CSRBlock(config)
        self.engine = KVEngine(config)
        self.ports = [ReadPort(config) for _ in range(c.read_ports)]
        self.tables = Tables(config)
        self.cache = build_scale_cache(config)   # the quantizer's and read port 0's copies
        # Read ports 1..: a dequantizer copy each (a memory has one read port per copy).
        self.port_caches = ([ScaleCache(c.fmt, c.elem, c, dequant_lanes=c.dequant_lanes)
                             for _ in range(1, c.read_ports)] if self.cache is not None else [])
        members = {name: member for name, member in self.csr.signature.members.items()
                   if name.startswith(AXIL_PREFIX)}
        members["s_axis_kv"] = In(stream.Signature(kv_layout(c)))
        members["s_axis_cmd"] = In(stream.Signature(layout.command(c)))
        for p in range(c.read_ports):
            members[f"m_axis_kv{p}"] = Out(stream.Signature(out_layout(c)))
        for n in range(c.read_ports):
            members[f"m_axi{n}"] = Out(AXI4Signature(addr_width=c.addr_width, data_width=8 * c.bus_bytes,
                                                     write=n == 0))
        members["memset"] = In(stream.Signature(ScaleWrite))
        members["irq"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        csr, engine, ports, tables = self.csr, self.engine, self.ports, self.tables

        # Soft reset: stop and drain, then one clock of reset for everything the engine owns.
        resetting, engine_reset = Signal(), Signal()
        drained = engine.idle & Cat(p.idle for p in ports).all()
        # An expression rather than an assignment under If, so that simulators evaluate it from time 0.
        m.d.comb += engine_reset.eq(resetting & drained & ~csr.soft_reset)
        with m.If(csr.soft_reset):
            m.d.sync += resetting.eq(1)
        with m.Elif(engine_reset):
            m.d.sync += resetting.eq(0)
        reset = {"sync": engine_reset}
        counters = EngineCounters()

        m.submodules.csr = csr
        m.submodules.tables = tables
        m.submodules.engine = ResetInserter(reset)(engine)
        for p, port in enumerate(ports):
            m.submodules[f"read_port{p}"] = ResetInserter(reset)(port)
        m.submodules.counters = ResetInserter(reset)(counters)

        for name, member in self.signature.members.items():
            if name.startswith(AXIL_PREFIX):
                ours, theirs = getattr(self, name), getattr(csr, name)
                m.d.comb += (theirs.eq(ours) if member.flow == wiring.In else ours.eq(theirs))

        # Tables, written by the register block, read by the engine.
        connect(m, csr.region_write, tables.region_write)
        connect(m, csr.layer_write, tables.layer_write)
        for r in READERS:
            for name in ("region", "layer"):
                m.d.comb += [getattr(tables, f"{name}_addr_{r}").eq(getattr(engine, f"{name}_addr_{r}")),
                             getattr(engine, f"{name}_data_{r}").eq(getattr(tables, f"{name}_data_{r}"))]

        # Engine: streams, commands, configuration.
        connect(m, flipped(self.s_axis_kv), engine.kv)
        connect(m, flipped(self.s_axis_cmd), engine.cmd_axis)
        connect(m, csr.cmd_write, engine.cmd_reg)
        m.d.comb += [
            engine.enable.eq(csr.enable),
            engine.stop.eq(resetting),
            engine.head_dim.eq(csr.head_dim),
            engine.ring_max_tokens.eq(csr.ring_max_tokens),
            engine.ring_sinks.eq(csr.ring_sinks),
            engine.ring_window.eq(csr.ring_window),
            engine.sel_seq.eq(csr.sel_seq),
            engine.sel_cls.eq(csr.sel_cls),
            csr.ring_n_valid.eq(engine.ring_n_valid),
            csr.ring_configured.eq(engine.ring_configured),
            csr.ring_cfg_err.eq(engine.ring_cfg_err),
            csr.ring_appended.eq(engine.ring_appended),
        ]

        # Read ports and AXI masters.
        read_bytes = []
        for p, port in enumerate(ports):
            connect(m, getattr(engine, f"run{p}"), port.run)
            connect(m, port.o, flipped(getattr(self, f"m_axis_kv{p}")))
            m.d.comb += [
                port.row_bytes.eq(engine.row_bytes),
                port.beats_per_row.eq(csr.head_dim >> log2(c.dequant_lanes)),
                port.drain.eq(resetting),
                getattr(engine, f"read_done{p}").eq(port.done),
            ]
            run = port.run
            read_bytes.append(Signal(32, name=f"read_bytes{p}"))
            m.d.comb += read_bytes[-1].eq((run.valid & run.ready).replicate(32)
                                          & (run.payload.slots * engine.row_bytes)[:32])
        connect_split(m, self.m_axi0, write=engine.axi, read=ports[0].axi)
        for n in range(1, c.read_ports):
            connect(m, ports[n].axi, flipped(getattr(self, f"m_axi{n}")))

        bad_scale_write = merge_scale_writes(m, csr.scale_write, self.memset, self.cache)
        if self.cache is not None:
            m.submodules.scale_cache = self.cache
            connect(m, engine.scales, self.cache.quant)
            connect(m, ports[0].scales, self.cache.dequant)
            w = self.cache.write
            for p, cache in enumerate(self.port_caches, 1):
                m.submodules[f"scale_cache{p}"] = cache
                connect(m, ports[p].scales, cache.dequant)
                # Same writes as the first copy (its write port is always ready): same contents.
                m.d.comb += [cache.write.valid.eq(w.valid), cache.write.payload.eq(w.payload)]

        # Counters and sticky bits.
        error_runs = sum(p.error_run for p in ports)
        ddr_error_events = engine.write_error + error_runs
        blocks_per_pulse = ports[0].blocks_per_pulse
        m.d.comb += [
            counters.clear.eq(csr.counter_clear),
            counters.add_elems_quantized.eq(engine.kv_fire * c.quant_lanes),
            counters.add_blocks_written.eq(engine.block_fire),
            counters.add_blocks_read.eq(sum(p.blocks_read for p in ports) * blocks_per_pulse),
            counters.add_ddr_bytes_written.eq(engine.bytes_written),
            counters.add_ddr_bytes_read.eq(sum(read_bytes)),
            counters.add_cycles.eq(1),
            counters.add_vectors_written.eq(engine.vector_written),
            counters.add_vectors_dropped.eq(engine.vector_dropped),
            counters.add_commands_done.eq(engine.cmds_done),
            counters.add_ddr_errors.eq(ddr_error_events),
            counters.add_frame_errors.eq(engine.frame_error),
            counters.add_cmd_errors.eq(engine.cmd_error),
            counters.nonfinite_total.eq(engine.nonfinite_count + sum(p.nonfinite_count for p in ports)),
            counters.saturated_total.eq(sum(p.saturated_count for p in ports)),
        ]
        for name in EngineCounters.WIDE + EngineCounters.NARROW:
            m.d.comb += getattr(csr, name).eq(getattr(counters, name))
        m.d.comb += [
            csr.nonfinite_elems.eq(counters.nonfinite_elems),
            csr.saturated_elems.eq(counters.saturated_elems),
            csr.nonfinite_seen.eq(counters.nonfinite_moved),
            csr.saturated_seen.eq(counters.saturated_moved),
            csr.bad_scale_index.eq(bad_scale_write),
            csr.axi_error.eq(0),
            csr.ddr_error.eq(ddr_error_events != 0),
            csr.resetting.eq(resetting),
            csr.busy.eq(engine.busy | Cat(p.busy for p in ports).any()
                        | Cat(getattr(self, f"m_axis_kv{p}").valid for p in range(c.read_ports)).any()),
            csr.head_dim_err.eq(engine.head_dim_err),
            self.irq.eq((csr.sticky & csr.irq_enable).any()),
        ]
        for name in ENGINE_EVENTS:
            m.d.comb += getattr(csr, name).eq(getattr(engine, name))
        return m
