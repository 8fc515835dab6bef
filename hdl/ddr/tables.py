"""The KV cache's region table and layer-class table (docs/kvcache.md, section 2).

Kept apart from the engine so a soft reset, which resets the engine, leaves the tables as the driver
wrote them. Each table has one write port fed by the register block's write stream and two read
ports (the write path and the command unit look rows up independently), data one clock after the
address. A write whose index is beyond the table is taken and ignored, so a bad index never stalls
the register bus.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from kvpath import layout
from kvpath.config import KVPathConfig

READERS = ("w", "c")  # the write path's and the command unit's read ports


def class_shape(c: KVPathConfig) -> int:
    """A layer's stored class: 0 .. n_classes - 1, or n_classes for "beyond the build" (its vectors drop)."""
    return max(1, c.n_classes.bit_length())


class Tables(wiring.Component):
    def __init__(self, config: KVPathConfig):
        self.config = c = config
        self.n_regions = layout.region_count(c)
        members = {
            "region_write": In(stream.Signature(data.StructLayout({"index": 32, "value": 32, "high": 32}))),
            "layer_write": In(stream.Signature(data.StructLayout({"index": 32, "value": 32}))),
        }
        for r in READERS:
            members[f"region_addr_{r}"] = In(layout.bits(self.n_regions))
            members[f"region_data_{r}"] = Out(c.addr_width)
            members[f"layer_addr_{r}"] = In(layout.bits(c.max_layers))
            members[f"layer_data_{r}"] = Out(class_shape(c))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        m.submodules.regions = regions = Memory(shape=c.addr_width, depth=self.n_regions, init=[])
        m.submodules.layers = layers = Memory(shape=class_shape(c), depth=c.max_layers, init=[])

        # Writes are registered before they reach the memories: the register block's address
        # decode then ends at these registers instead of running on into the memories' write
        # enables and read registers (11 LUT levels in KVCacheTop). A write lands one clock later,
        # long before the AXI4-Lite response that lets the driver issue a command reading it.
        rw, lw = self.region_write, self.layer_write
        m.d.comb += [rw.ready.eq(1), lw.ready.eq(1)]
        region_en = Signal()
        region_addr = Signal(range(self.n_regions))
        region_data = Signal(c.addr_width)
        layer_en = Signal()
        layer_addr = Signal(range(c.max_layers))
        layer_data = Signal(class_shape(c))
        m.d.sync += [
            region_en.eq(rw.valid & (rw.payload.index < self.n_regions)),
            region_addr.eq(rw.payload.index),
            region_data.eq((rw.payload.high[:c.addr_width - 32] << 32) | rw.payload.value),
            layer_en.eq(lw.valid & (lw.payload.index < c.max_layers)),
            layer_addr.eq(lw.payload.index),
            layer_data.eq(Mux(lw.payload.value < c.n_classes, lw.payload.value, c.n_classes)),
        ]
        wp = regions.write_port()
        m.d.comb += [wp.addr.eq(region_addr), wp.data.eq(region_data), wp.en.eq(region_en)]
        wp = layers.write_port()
        m.d.comb += [wp.addr.eq(layer_addr), wp.data.eq(layer_data), wp.en.eq(layer_en)]
        for r in READERS:
            for mem, name in ((regions, "region"), (layers, "layer")):
                rp = mem.read_port(transparent_for=())
                m.d.comb += [rp.addr.eq(getattr(self, f"{name}_addr_{r}")),
                             getattr(self, f"{name}_data_{r}").eq(rp.data)]
        return m
