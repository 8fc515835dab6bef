"""The flat Vivado top ``kvpath_axi_top``: ``KVCacheTop`` with the port names Vivado infers as bus
interfaces (docs/kv260.md, "The port contract of kvpath_axi_top").

``KVPathAxiTop(config)``, Verilog module ``kvpath_axi_top`` (``hdl/generate.py`` MODULES). Every
port is derived from ``KVCacheTop``'s signature by these rules, so a port added there appears here
under its flat name without an edit:

* ``aclk``, ``aresetn``: the clock and the active-low reset (see "Reset" below).
* ``s_axil_*``: the register block's AXI4-Lite slave, names unchanged. ``awaddr``/``araddr`` are
  widened to ``AXIL_ADDR_WIDTH`` (16: the board's 64 KiB register window); the register block
  decodes the low bits and ignores the rest, so the registers repeat across the window.
  ``awprot``/``arprot`` are added (ignored: every access is allowed) so that the interface has the
  whole AXI4-Lite signal set.
* An AXI-Stream member ``x`` (a ``lib.stream`` port) becomes ``<x>_tvalid`` / ``<x>_tready`` and
  its payload: a payload layout whose fields are among ``data``, ``user``, ``last`` is split into
  ``tdata``/``tuser``/``tlast`` (``kv_layout``, ``out_layout``); any other payload goes whole to
  ``tdata`` (``s_axis_cmd``: the 64-bit command; ``s_axis_memset``: ``ScaleWrite``, index in bits
  31..0, value in 63..32). Members not already named ``s_axis_*``/``m_axis_*`` get that prefix by
  direction (``memset`` -> ``s_axis_memset``).
* An AXI4 master ``m_axi<n>`` (``AXI4Signature``) becomes ``m_axi<n>_<signal>`` with the AXI names
  (``awaddr`` ... ``rready``); master 0 has all five channels, the others AR and R only.
* Other single ports (``irq``) keep their names.

DMA bridge. ``KVPathAxiTop(config, dma_bridge=True)`` is the board's variant (docs/kv260.md, "The
stream path"): the K/V input and read port 0's output go through the header-framing adapters of
``hdl/top/stream_bridge.py`` so that a Xilinx AXI DMA (no TUSER, TLAST only at the end of a
transfer) can feed and drain them. ``s_axis_kv_*`` becomes ``s_axis_dma_*`` (``tdata``, ``tlast``,
``tvalid``, ``tready``: MM2S) and ``m_axis_kv0_*`` becomes ``m_axis_dma_*`` (the same, plus
``m_axis_dma_tkeep``, constant all ones, so that S2MM gets a complete stream interface); every
other port is unchanged. The default (``dma_bridge=False``) builds exactly the top described above.

Reset. ``aresetn`` drives the whole design's synchronous reset through a two-flop synchronizer
that asserts at once and deasserts on the second rising edge of ``aclk`` after ``aresetn`` rises.
AXI lets ARESETn assert asynchronously but requires deassertion synchronous to ACLK; on the KV260
``proc_sys_reset`` already provides that, but a reset from anywhere else released close to a clock
edge would let flops leave reset in different cycles (or go metastable), and the two flops bound
that risk at two cycles of latency. The flops are reset asynchronously so that the design enters
reset even before the clock runs, and carry ASYNC_REG so Vivado places them together. Because the
design leaves reset two cycles after its neighbours, every VALID and READY crossing the boundary
is held low while the internal reset is high: no handshake can complete, in either direction,
while the design would ignore it.
"""

from __future__ import annotations

import traceback

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Module, ResetSignal, Shape, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In

from kvpath.config import DEFAULT, KVPathConfig
from kvpath.hdl.ddr.axi4 import AXI4Signature
from kvpath.hdl.top.kvcache import KVCacheTop
from kvpath.hdl.top.stream_bridge import HeaderInsert, HeaderStrip
from kvpath.hdl.top.top import AXIL_PREFIX

__all__ = ["KVPathAxiTop", "CLOCK", "RESET", "AXIL_ADDR_WIDTH", "AXIS_FIELDS", "stream_port_name",
           "axis_fields", "RESET_STAGES", "DMA_IN", "DMA_OUT", "DMA_PORTS"]

CLOCK, RESET = "aclk", "aresetn"
AXIL_ADDR_WIDTH = 16
AXIL_ADDED = {"awprot": 3, "arprot": 3}   # AXI4-Lite signals the register block does without
AXIS_FIELDS = {"data": "tdata", "user": "tuser", "last": "tlast"}
RESET_STAGES = 2
# With dma_bridge=True: the flat name of the bridged input and output, and which KVCacheTop streams
# they replace.
DMA_IN, DMA_OUT = "s_axis_dma", "m_axis_dma"
DMA_PORTS = {"s_axis_kv": DMA_IN, "m_axis_kv0": DMA_OUT}


def stream_port_name(member: str, flow: wiring.Flow) -> str:
    """The flat interface name of ``KVCacheTop``'s stream member ``member``."""
    if member.startswith(("s_axis_", "m_axis_")):
        return member
    return ("s_axis_" if flow == wiring.Flow.In else "m_axis_") + member


def axis_fields(payload_shape) -> list[tuple[str, int, int]]:
    """``(suffix, offset, width)`` of each AXI-Stream signal a payload is carried on (besides
    TVALID/TREADY): ``tdata``/``tuser``/``tlast`` for a layout of ``data``/``user``/``last``
    fields, else the whole payload on ``tdata``."""
    if isinstance(payload_shape, data.StructLayout):
        fields = dict(payload_shape)
        if fields and set(fields) <= set(AXIS_FIELDS):
            return [(AXIS_FIELDS[name], field.offset, Shape.cast(field.shape).width)
                    for name, field in fields.items()]
    return [("tdata", 0, Shape.cast(payload_shape).width)]


def _refused(top, exc: BaseException) -> None:
    """Silence Amaranth's UnusedElaboratable for ``top`` and for what the refused constructors had
    built (the objects their frames hold): a configuration the engine does not support is refused,
    not forgotten (as ``ReadPort`` does for itself)."""
    top._MustUse__silence = True
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        for obj in frame.f_locals.values():
            for o in (obj, *getattr(obj, "__dict__", {}).values()):
                if isinstance(o, Elaboratable):
                    o._MustUse__silence = True


def _handshake(name: str) -> bool:
    return name.endswith(("valid", "ready"))


class KVPathAxiTop(wiring.Component):
    def __init__(self, config: KVPathConfig = DEFAULT, *, dma_bridge: bool = False):
        self.config = config
        self.dma_bridge = dma_bridge
        try:
            self.kvcache = KVCacheTop(config)
        except NotImplementedError as e:
            _refused(self, e)
            raise
        # KVCacheTop stream member -> its adapter (dma_bridge): the adapter's DMA side takes its place.
        self.bridge = {}
        if dma_bridge:
            def payload_of(name):
                return self.kvcache.signature.members[name].signature.members["payload"].shape

            # One header per vector in normal traffic: segments of up to a vector's beats.
            self.bridge = {"s_axis_kv": HeaderStrip(payload_of("s_axis_kv")),
                           "m_axis_kv0": HeaderInsert(payload_of("m_axis_kv0"),
                                                      max(1, config.max_head_dim // config.dequant_lanes))}
        # (flat port, the KVCacheTop bits it carries, flow of the flat port): what elaborate wires.
        self._wires: list[tuple[str, Value, wiring.Flow]] = []
        members = {CLOCK: In(1), RESET: In(1)}
        for name, member in self.kvcache.signature.members.items():
            inner = getattr(self.kvcache, name)
            if member.is_port and name.startswith(AXIL_PREFIX):
                sig = name[len(AXIL_PREFIX):]
                width = AXIL_ADDR_WIDTH if sig in ("awaddr", "araddr") else Shape.cast(member.shape).width
                self._add(members, name, inner, width, member.flow)
                if sig in ("awaddr", "araddr"):
                    added = f"{AXIL_PREFIX}{sig[:2]}prot"
                    if added not in self.kvcache.signature.members:
                        members[added] = In(AXIL_ADDED[sig[:2] + "prot"])
            elif member.is_port:
                self._add(members, name, inner, Shape.cast(member.shape).width, member.flow)
            elif isinstance(member.signature, stream.Signature) and name in self.bridge:
                # The adapter's DMA-side stream takes the engine stream's place (elaborate connects them).
                bridge = self.bridge[name]
                side = "i" if member.flow == wiring.Flow.In else "o"
                outer = getattr(bridge, side)
                flat, payload = DMA_PORTS[name], Value.cast(outer.payload)
                shape = bridge.signature.members[side].signature.members["payload"].shape
                for suffix, offset, width in axis_fields(shape):
                    self._add(members, f"{flat}_{suffix}", payload[offset:offset + width], width, member.flow)
                self._add(members, f"{flat}_tvalid", outer.valid, 1, member.flow)
                self._add(members, f"{flat}_tready", outer.ready, 1, member.flow.flip())
                if member.flow == wiring.Flow.Out:
                    width = bridge.width // 8
                    self._add(members, f"{flat}_tkeep", Const((1 << width) - 1, width), width, member.flow)
            elif isinstance(member.signature, stream.Signature):
                flat = stream_port_name(name, member.flow)
                payload = Value.cast(inner.payload)
                for suffix, offset, width in axis_fields(member.signature.members["payload"].shape):
                    self._add(members, f"{flat}_{suffix}", payload[offset:offset + width], width, member.flow)
                self._add(members, f"{flat}_tvalid", inner.valid, 1, member.flow)
                self._add(members, f"{flat}_tready", inner.ready, 1, member.flow.flip())
            elif isinstance(member.signature, AXI4Signature):
                for sig, sub in member.signature.members.items():
                    flow = sub.flow if member.flow == wiring.Flow.Out else sub.flow.flip()
                    self._add(members, f"{name}_{sig}", getattr(inner, sig), Shape.cast(sub.shape).width, flow)
            else:
                raise TypeError(f"KVCacheTop member {name!r} ({member!r}) has no flat-port rule")
        super().__init__(members)

    def _add(self, members, flat, inner, width, flow):
        if flat in members:
            raise ValueError(f"two KVCacheTop members flatten to the port {flat!r}")
        members[flat] = flow(width)
        self._wires.append((flat, inner, flow))

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.submodules.kvcache = self.kvcache
        for name, bridge in self.bridge.items():
            m.submodules[f"bridge_{name}"] = bridge
            if isinstance(bridge, HeaderStrip):
                wiring.connect(m, bridge.o, self.kvcache.s_axis_kv)
            else:
                wiring.connect(m, getattr(self.kvcache, name), bridge.i)

        # aresetn -> two flops, asynchronously set (reset asserted) by aresetn low, released one
        # flop per aclk edge; the last drives the design's synchronous reset (module docstring).
        m.domains.aresetn_sync = ClockDomain("aresetn_sync", async_reset=True, local=True)
        stages = [Signal(init=1, name=f"reset_sync{k}", attrs={"ASYNC_REG": "TRUE"})
                  for k in range(RESET_STAGES)]
        m.d.aresetn_sync += [a.eq(b) for a, b in zip(stages, [0, *stages])]
        m.d.comb += [
            ClockSignal("aresetn_sync").eq(getattr(self, CLOCK)),
            ResetSignal("aresetn_sync").eq(~getattr(self, RESET)),
            cd.clk.eq(getattr(self, CLOCK)),
            cd.rst.eq(stages[-1]),
        ]

        running = ~cd.rst
        for flat, inner, flow in self._wires:
            outer = getattr(self, flat)
            if flow == wiring.Flow.In:
                m.d.comb += inner.eq(outer & running if _handshake(flat) else outer)
            else:
                m.d.comb += outer.eq(inner & running if _handshake(flat) else inner)
        return m
