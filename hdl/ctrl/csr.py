"""The control/status register block behind an AXI4-Lite slave, generated from the register map.

Every register, field position, access type and reset value comes from ``kvpath.regmap.build_map``;
nothing here names a register except by the access semantics the map gives it. docs/regmap.md
("Bus behaviour") is the contract this implements.

Ports (besides the flat ``s_axil_*`` slave, see ``hdl/ctrl/axil.py``), named by the map's ``port``:

* ``Out`` per RW field (its current value) and per W1P field (a one-cycle pulse);
* ``In`` per live RO field and per 64-bit counter (the datapath's value);
* ``In`` per W1C field: a pulse that sets the sticky bit (``axi_error`` is also set internally);
* one ``Out(stream.Signature(stream_layout(s)))`` per write-stream register (``WriteStream`` in the
  map: ``scale_write`` for SCALE_DATA, ...), one beat per accepted write.

Write path: AW and W are captured in holding registers, in either order; once both are held and no
response is pending the write executes (a write-stream register first waits for its stream's
``ready``) and B is raised. Both addresses are decoded as they are captured (one bit per register).
Read path: the clock after AR is accepted, R is loaded from the register it selected. One
transaction of each kind at a time: simple, deadlock-free, and far faster than any driver issues
them.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import DEFAULT, KVPathConfig
from kvpath.hdl.ctrl.axil import AxiLitePort, axil_slave_members
from kvpath.regmap import build_map
from kvpath.regmap.json_map import RESP
from kvpath.regmap.layout import DATA_BITS, RO, RW, W1C, W1P, WORD_BYTES, WriteStream
from kvpath.regmap.map import AXI_ERROR

OKAY, SLVERR = RESP["okay"], RESP["slverr"]
ALL_LANES = (1 << (DATA_BITS // 8)) - 1


def _members(regmap) -> dict:
    members = axil_slave_members(regmap.addr_width, DATA_BITS)
    for r, f in regmap.fields():
        if f.is_constant or r.part == "hi":
            continue
        if r.wide:
            members[f.port] = In(2 * DATA_BITS)
        elif f.access == RW:
            members[f.port] = Out(f.width, init=f.reset)
        elif f.access == W1P:
            members[f.port] = Out(1)
        elif f.access in (RO, W1C):
            members[f.port] = In(f.width)
    for r in regmap.registers:
        if r.stream is not None:
            members[r.stream.port] = Out(stream.Signature(stream_layout(r.stream)))
    members["sticky"] = Out(max(1, len(_sticky_fields(regmap))))
    return members


def _sticky_fields(regmap) -> list:
    """The W1C fields in map order: their bits in ``sticky``, so a top level can form an interrupt
    from them (IRQ_ENABLE has one enable per sticky bit, in the same order)."""
    return [f for _, f in regmap.fields() if f.access == W1C]


def stream_layout(ws: WriteStream) -> data.StructLayout:
    """A write stream's beat: ``index`` (if the stream has one), the written ``value``, ``high``."""
    fields = {"index": DATA_BITS} if ws.index else {}
    fields["value"] = DATA_BITS
    if ws.high:
        fields["high"] = DATA_BITS
    return data.StructLayout(fields)


class CSRBlock(wiring.Component):
    def __init__(self, config: KVPathConfig = DEFAULT):
        self.config = config
        self.regmap = build_map(config)
        super().__init__(_members(self.regmap))

    def elaborate(self, platform):
        m = Module()
        regmap = self.regmap
        bus = AxiLitePort(self)
        word = slice(2, regmap.addr_width)

        # --- storage: RW fields are the output ports themselves; sticky bits and LO/HI snapshots
        sticky = {f.port: Signal(f.width, name=f"sticky_{f.port}") for _, f in regmap.fields()
                  if f.access == W1C}
        snapshot = {r.wide: Signal(DATA_BITS, name=f"snap_{r.wide}") for r in regmap.registers
                    if r.part == "hi"}

        def read_value(r):
            """The register's read data as one full-width expression: gaps and write-only bits are 0."""
            parts, next_lsb = [], 0
            for f in r.fields:
                if f.is_constant:
                    src = Const(f.reset, f.width)
                elif r.part == "lo":
                    src = getattr(self, r.wide)[:DATA_BITS]
                elif r.part == "hi":
                    src = snapshot[r.wide]
                elif f.access in (RW, RO):
                    src = getattr(self, f.port)
                elif f.access == W1C:
                    src = sticky[f.port]
                else:  # W1P, WO read 0
                    continue
                parts += [Const(0, f.lsb - next_lsb), src]
                next_lsb = f.lsb + f.width
            return Cat(*parts, Const(0, DATA_BITS - next_lsb))

        def decode(addr, registers) -> Value:
            """One bit per register of ``registers``, set where ``addr`` is its word: decoded as the
            address is captured, so that no address compare sits in front of the read multiplexer
            or of a write's effects (ARADDR, an input, reached RDATA over 8 LUT levels in
            KVPathTop; the held AWADDR reached the tables' write enable over 8 in KVCacheTop)."""
            return Cat(addr[word] == r.offset // WORD_BYTES for r in registers)

        # --- read path: AR is captured (its register decoded), the next clock loads R
        registers = regmap.registers
        ar_full, ar_sel = Signal(name="ar_full"), Signal(len(registers), name="ar_sel")
        r_valid, r_resp = Signal(name="r_valid"), Signal(2, name="r_resp")
        r_data = Signal(DATA_BITS, name="r_data")
        # An expression, not an assignment under the If below: event-driven simulators would leave
        # such a signal unknown until its If's condition first changes.
        read_error = ar_full & ~ar_sel.any()
        m.d.comb += [bus.arready.eq(~ar_full & ~r_valid), bus.rvalid.eq(r_valid), bus.rdata.eq(r_data),
                     bus.rresp.eq(r_resp)]
        with m.If(r_valid & bus.rready):
            m.d.sync += r_valid.eq(0)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [ar_full.eq(1), ar_sel.eq(decode(bus.araddr, registers))]
        with m.If(ar_full):
            # One-hot (or zero: unmapped), so the read data is an OR of the selected register's value.
            value = 0
            for k, r in enumerate(registers):
                value = value | (read_value(r) & ar_sel[k].replicate(DATA_BITS))
                if r.part == "lo":
                    with m.If(ar_sel[k]):
                        m.d.sync += snapshot[r.wide].eq(getattr(self, r.wide)[DATA_BITS:])
            m.d.sync += [ar_full.eq(0), r_valid.eq(1), r_data.eq(value),
                         r_resp.eq(Mux(ar_sel.any(), OKAY, SLVERR))]

        # --- write path
        writable = [r for r in registers if r.writable]
        aw_full, aw_sel = Signal(name="aw_full"), Signal(max(1, len(writable)), name="aw_sel")
        w_full, w_data = Signal(name="w_full"), Signal(DATA_BITS, name="w_data")
        w_strb = Signal(DATA_BITS // 8, name="w_strb")
        b_valid, b_resp = Signal(name="b_valid"), Signal(2, name="b_resp")
        m.d.comb += [bus.awready.eq(~aw_full), bus.wready.eq(~w_full), bus.bvalid.eq(b_valid),
                     bus.bresp.eq(b_resp)]
        with m.If(bus.awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_sel.eq(decode(bus.awaddr, writable))]
        with m.If(bus.wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(b_valid & bus.bready):
            m.d.sync += b_valid.eq(0)

        ready_to_write = aw_full & w_full & ~b_valid

        def lane_bits(f) -> Signal:
            """1 where the written data bit is in an enabled byte lane."""
            return Cat(w_strb[(f.lsb + i) // 8] for i in range(f.width))

        def rw_port(name):
            return getattr(self, regmap.register(name).fields[0].port)

        for port in (f.port for _, f in regmap.fields() if f.access == W1P):
            m.d.sync += getattr(self, port).eq(0)

        # One term per writable register, enabled by its decoded bit (at most one is set). Every
        # combinational output is an expression of the held write, not an assignment under an If:
        # event-driven simulators would leave such a signal unknown until its If's condition first
        # changes (a W1C clear unknown until its register's first write made STATUS unknown).
        clear = {port: Const(0, s.shape()) for port, s in sticky.items()}
        completes, okays = [ready_to_write & ~aw_sel[:len(writable)].any()], []  # unmapped: SLVERR
        for k, r in enumerate(writable):
            selected = ready_to_write & aw_sel[k]
            if r.stream is not None:
                out = getattr(self, r.stream.port)
                whole = w_strb == ALL_LANES      # a partial write is refused: SLVERR, no beat
                m.d.comb += [out.valid.eq(selected & whole), out.payload.value.eq(w_data)]
                if r.stream.high:
                    m.d.comb += out.payload.high.eq(rw_port(r.stream.high))
                if r.stream.index:
                    m.d.comb += out.payload.index.eq(rw_port(r.stream.index))
                completes.append(selected & (~whole | out.ready))
                okays.append(selected & whole & out.ready)
                if r.stream.index:
                    with m.If(selected & whole & out.ready):
                        m.d.sync += rw_port(r.stream.index).eq(rw_port(r.stream.index) + 1)
                continue
            completes.append(selected)
            okays.append(selected)
            for f in r.fields:
                data, lanes = w_data[f.lsb:f.lsb + f.width], lane_bits(f)
                port = getattr(self, f.port, None)
                if f.access == RW:
                    with m.If(selected):
                        m.d.sync += port.eq(Cat(Mux(lanes[i], data[i], port[i]) for i in range(f.width)))
                elif f.access == W1P:
                    with m.If(selected):
                        m.d.sync += port.eq(data & lanes)
                elif f.access == W1C:
                    clear[f.port] = Mux(selected, data & lanes, 0)

        done = Cat(completes).any()         # the held write completes this cycle
        resp = Mux(Cat(okays).any(), OKAY, SLVERR) if okays else Const(SLVERR, 2)
        with m.If(done):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), b_valid.eq(1), b_resp.eq(resp)]

        # Sticky bits: a set in the same cycle as a clear wins, so no event is lost.
        for port, bit in sticky.items():
            set_ = getattr(self, port)
            if port == AXI_ERROR:
                set_ = set_ | (done & (resp == SLVERR)) | read_error
            m.d.sync += bit.eq((bit & ~clear[port]) | set_)
        m.d.comb += self.sticky.eq(Cat(sticky[f.port] for f in _sticky_fields(regmap)))
        return m
