"""The read path: ggml blocks in, FP16 or BF16 elements out (``kvpath.hdl.dequant.frame.Dequantizer``).

Stream ``i`` carries ``blocks_per_beat = max(1, lanes // 32)`` ggml blocks per beat (block ``b`` at
bits ``[8*block_bytes*b, ...)``, byte ``k`` of a block at its bits ``[8k, 8k+8)``); stream ``o``
carries ``lanes`` FP16 (``elem="fp16"``) or BF16 (``elem="bf16"``) bit patterns per beat: the output
element type follows the one the quantizer was generated for. With ``lanes < 32`` a block leaves as ``32 // lanes``
beats, beat ``k`` holding elements ``k*lanes ..``; with ``lanes >= 32`` lane ``32*b + e`` is element
``e`` of block ``b``.

Pipeline. A holding register takes an input beat and hands it out one output beat at a time; stage 1
sanitizes the scale fields (counting non-finite ones) and picks the beat's codes; the format's
engine (``dequant_mul.MulEngine`` for q8_0 / q4_0, ``dequant_q41.Q41Engine`` for q4_1) computes
the FP16 values in a fixed number of stages, its last register being the output payload. Every
datapath register loads on ``en = ~o.valid | o.ready``: back-pressure freezes the whole pipeline
and bubbles travel as cleared valid bits, so the output sustains one beat per clock while input
is available and the output is ready.

Latency: an input beat accepted in cycle t shows its first output beat in cycle t + ``latency``
(with the output ready throughout): 7 clocks for q8_0, 6 for q4_0, 14 for q4_1 with 8 lanes and 15
with 16 or more (``Dequantizer.latency``); BF16 output adds one clock to q8_0 and q4_0 (d is
normalized first) and none to q4_1.
``i.ready = ~held | (en & last beat of the held block)``: it depends combinationally on
``o.ready`` (through ``en``) whenever the holding register is full; ``o.valid`` and ``o.payload``
come straight from registers.

Counters (32 bits, wrapping): ``saturated_count`` counts output elements saturated to +/-65504; an
element is counted two clocks after its beat enters the output register, so the count is complete
one clock after the beat is taken at the latest. With BF16 output it is constant 0: results from
finite FP16 scales stay below 2**21, far inside BF16's range (docs/numerics.md, "BF16 output"),
so there is nothing to count and no counter is built. ``nonfinite_count`` counts Inf/NaN ``d`` and ``m``
fields replaced before use (two per block when both are), two clocks after the block's first beat
moves on from stage 1.
"""

from amaranth.hdl import Array, Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS, DEQUANT_LANES, ELEM_BITS, check_elem, get_format

from kvpath.hdl.lib.counter import EventCounter
from kvpath.hdl.dequant.fields import sanitize
from kvpath.hdl.dequant.mul import MulEngine
from kvpath.hdl.lib.pipe import reg
from kvpath.hdl.dequant.q4_1 import Q41Engine


def build_dequantizer(fmt: str, lanes: int, elem: str = "fp16") -> wiring.Component:
    """The read-path block for any block-scaled format; all share ``Dequantizer``'s ports."""
    f = get_format(fmt)
    check_elem(elem)
    if f.family == "mx":
        from kvpath.hdl.dequant.mx import MXDequantizer
        return MXDequantizer(fmt, lanes, elem)
    if f.family == "static":
        raise ValueError(f"{fmt} takes its scales from the scale cache; use kvpath.hdl.static.dequant")
    return Dequantizer(fmt, lanes, elem)


class Dequantizer(wiring.Component):
    """Dequantizer for ``fmt`` (q8_0, q4_0, q4_1) emitting ``lanes`` values of type ``elem`` per beat."""

    def __init__(self, fmt: str, lanes: int, elem: str = "fp16"):
        self.format = get_format(fmt)
        if self.format.family != "ggml":
            raise ValueError(f"Dequantizer handles the ggml formats; use build_dequantizer for {fmt}")
        if lanes not in DEQUANT_LANES:
            raise ValueError(f"dequantizer lanes must be one of {DEQUANT_LANES}, got {lanes}")
        self.elem = check_elem(elem)
        self.lanes = lanes
        self.blocks_per_beat = max(1, lanes // BLOCK_ELEMS)
        self.beats_per_block = max(1, BLOCK_ELEMS // lanes)
        if self.format.name == "q4_1":
            self._engine = Q41Engine(lanes, elem=elem)
        else:
            self._engine = MulEngine(self.format.name, lanes, elem)
        # Holding register, stage 1, then the engine's stages.
        self.latency = 2 + self._engine.latency
        super().__init__({
            "i": In(stream.Signature(unsigned(8 * self.format.block_bytes * self.blocks_per_beat))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(ELEM_BITS), lanes))),
            "saturated_count": Out(32),
            "nonfinite_count": Out(32),
        })

    def _block_codes(self, block) -> list:
        """The block's 32 stored codes, element order."""
        f = self.format
        codes = block[8 * f.header_bytes:]
        if f.code_bits == 8:
            return [codes[8 * e:8 * e + 8] for e in range(BLOCK_ELEMS)]
        half = BLOCK_ELEMS // 2
        return [codes[8 * (e % half) + 4 * (e // half):][0:4] for e in range(BLOCK_ELEMS)]

    def elaborate(self, platform):
        m = Module()
        f = self.format
        eng = self._engine
        m.submodules.engine = eng
        saturating = self.elem == "fp16"
        if saturating:
            m.submodules.sat_counter = sat_ctr = EventCounter(self.lanes)
        n_fields = len(f.scale_fields) * self.blocks_per_beat
        m.submodules.nonfinite_counter = nf_ctr = EventCounter(n_fields)
        if saturating:
            m.d.comb += self.saturated_count.eq(sat_ctr.count)
        m.d.comb += self.nonfinite_count.eq(nf_ctr.count)

        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        # Holding register: one input beat, handed out as beats_per_block output beats.
        hold = Signal.like(self.i.payload, reset_less=True)
        held = Signal()
        beat = Signal(range(self.beats_per_block))
        last = beat == self.beats_per_block - 1
        take = held & en
        m.d.comb += self.i.ready.eq(~held | (en & last))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [hold.eq(self.i.payload), held.eq(1), beat.eq(0)]
        with m.Elif(take):
            with m.If(last):
                m.d.sync += held.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        # Stage 1: sanitized scale fields, this beat's codes.
        block_bits = 8 * f.block_bytes
        flags = []
        for b in range(self.blocks_per_beat):
            block = hold[block_bits * b:block_bits * (b + 1)]
            for k, name in enumerate(f.scale_fields):
                clean, nonfinite = sanitize(m, block[16 * k:16 * k + 16])
                m.d.comb += getattr(eng, name)[b].eq(reg(m, en, clean, name=f"{name}{b}_s1"))
                flags.append(reg(m, en, nonfinite, name=f"{name}{b}_nf"))
            codes = self._block_codes(block)
            if self.lanes >= BLOCK_ELEMS:
                for e in range(BLOCK_ELEMS):
                    m.d.comb += eng.codes[BLOCK_ELEMS * b + e].eq(reg(m, en, codes[e], name=f"c{b}_{e}"))
            else:
                for e in range(self.lanes):
                    pick = Array(codes[k * self.lanes + e] for k in range(self.beats_per_block))[beat]
                    m.d.comb += eng.codes[e].eq(reg(m, en, pick, name=f"c{e}"))
        first = Signal()  # stage 1 holds the first beat of a block: count its fields once
        valid = Signal()
        with m.If(en):
            m.d.sync += [valid.eq(held), first.eq(take & (beat == 0))]
        m.d.comb += [nf_ctr.events.eq(Cat(*flags)), nf_ctr.fire.eq(first & en)]

        # The engine's stages; its last register is the output payload.
        m.d.comb += eng.en.eq(en)
        chain = [valid]
        for k in range(eng.latency):
            nxt = Signal(name=f"valid_{k + 2}")
            with m.If(en):
                m.d.sync += nxt.eq(chain[-1])
            chain.append(nxt)
        m.d.comb += [
            self.o.valid.eq(chain[-1]),
            self.o.payload.eq(eng.value),
        ]

        # Saturations count when their beat enters the output register, so that the count is
        # complete no later than one clock after the beat is taken.
        if saturating:
            entered = Signal()
            m.d.sync += entered.eq(en & chain[-2])
            m.d.comb += [sat_ctr.events.eq(eng.sat), sat_ctr.fire.eq(entered)]
        return m
