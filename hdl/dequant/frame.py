"""The read path: blocks in, FP16 or BF16 elements out (``Dequantizer``), for every block-scaled format.

Stream ``i`` carries ``blocks_per_beat = max(1, lanes // 32)`` ggml blocks per beat (block ``b`` at
bits ``[8*block_bytes*b, ...)``, byte ``k`` of a block at its bits ``[8k, 8k+8)``); stream ``o``
carries ``lanes`` FP16 (``elem="fp16"``) or BF16 (``elem="bf16"``) bit patterns per beat: the output
element type follows the one the quantizer was generated for. With ``lanes < 32`` a block leaves as ``32 // lanes``
beats, beat ``k`` holding elements ``k*lanes ..``; with ``lanes >= 32`` lane ``32*b + e`` is element
``e`` of block ``b``.

Pipeline. A holding register takes an input beat and hands it out one output beat at a time; stage 1
reads the scale fields by the engine's rule (counting non-finite ones) and picks the beat's codes; the
format's engine (``config.FORMATS[fmt].engine``: ``mul.MulEngine`` for q8_0 / q4_0,
``q4_1.Q41Engine``, ``mx.MXEngine``; the contract is ``contract.py``) computes the values in a fixed
number of stages, its last register feeding the output queue. The pipeline never stalls: every
register loads on every clock (no clock enable, so no enable net fans out to the datapath) and
bubbles travel as cleared valid bits. Back-pressure is taken by the output queue (a LUT-RAM FIFO,
``lib.streams.CreditQueue``), in which an input beat reserves a place for each of its output beats
as it is accepted; the queue holds every beat that can be in flight (``queue_depth``), so the output
sustains one beat per clock while input is available and the output is ready.

Latency: an input beat accepted in cycle t shows its first output beat in cycle t + ``latency``
(with the output ready throughout): 9 clocks for q8_0, 8 for q4_0, 16 for q4_1 with 8 lanes and 17
with 16 or more, 7 for the MX formats (``Dequantizer.latency``: the holding register, stage 1, the
engine's stages and the queue's two); BF16 output adds one clock to q8_0 and q4_0 (d is normalized
first) and none to the others.
``i.ready = (~held | last beat of the held block) & room``: registers only, no path from
``o.ready``; ``o.valid`` and ``o.payload`` are the queue's output registers.

Counters (32 bits, wrapping): ``saturated_count`` counts output elements saturated to the largest
finite value; an element is counted two clocks after its beat enters the output queue, so the
count is complete by the time the beat can be taken. Engines whose results cannot
saturate build no counter (ggml scales into BF16: results from finite FP16 scales stay below 2**21,
docs/numerics.md, "BF16 output"), and the count stays 0. ``nonfinite_count`` counts non-finite
scale fields replaced before use (ggml Inf/NaN ``d`` and ``m``, two per block when both are; MX
NaN scale bytes), two clocks after the block's first beat moves on from stage 1, plus codes that
read as NaN (mxfp8_e4m3) on every beat.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS, DEQUANT_LANES, ELEM_BITS, check_elem, get_format, load
from kvpath.hdl.lib.counter import EventCounter
from kvpath.hdl.lib.bits import lookup
from kvpath.hdl.lib.pipe import reg
from kvpath.hdl.lib.streams import CreditQueue
from kvpath.packing import code_offset


def flat(ports):
    """An engine port as one value: array ports (a list of signals) are concatenated in order."""
    return Cat(*ports) if isinstance(ports, (list, tuple)) else ports


class Dequantizer(wiring.Component):
    """Dequantizer for a block-scaled ``fmt`` emitting ``lanes`` values of type ``elem`` per beat."""

    def __init__(self, fmt: str, lanes: int, elem: str = "fp16"):
        self.format = get_format(fmt)
        if self.format.engine is None:
            raise ValueError(f"{fmt} takes its scales from the scale cache; its read path is "
                             f"{self.format.family_info.dequantizer}")
        if lanes not in DEQUANT_LANES:
            raise ValueError(f"dequantizer lanes must be one of {DEQUANT_LANES}, got {lanes}")
        self.elem = check_elem(elem)
        self.lanes = lanes
        self.blocks_per_beat = max(1, lanes // BLOCK_ELEMS)
        self.beats_per_block = max(1, BLOCK_ELEMS // lanes)
        self._engine = load(self.format.engine)(self.format.name, lanes, elem)
        # Holding register, stage 1, the engine's stages, then the output queue's write and read.
        self.latency = 2 + self._engine.latency + 2
        self.out_queue_depth = self.queue_depth(self.beats_per_block, self.latency)  # holds depth + 1 beats
        super().__init__({
            "i": In(stream.Signature(unsigned(8 * self.format.block_bytes * self.blocks_per_beat))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(ELEM_BITS), lanes))),
            "saturated_count": Out(32),
            "nonfinite_count": Out(32),
        })

    @staticmethod
    def queue_depth(beats: int, latency: int) -> int:
        """Output queue entries: an input beat reserves its ``beats`` places when it is accepted,
        and each is freed when its output beat leaves the queue; the last of them leaves
        ``latency + beats - 1`` cycles later at the earliest, and the credit count shows it one
        clock after that. At one output beat per clock that many cycles hold as many beats, plus
        the input being accepted. The queue holds ``depth + 1`` (its output register)."""
        return CreditQueue.depth_for(latency + 2 * beats - 1)

    def _block_codes(self, block) -> list:
        """The block's 32 stored codes, element order."""
        f = self.format
        return [block[code_offset(f, e):][:f.code_bits] for e in range(BLOCK_ELEMS)]

    def elaborate(self, platform):
        m = Module()
        f = self.format
        eng = self._engine
        m.submodules.engine = eng
        saturating = eng.saturates
        if saturating:
            m.submodules.sat_counter = sat_ctr = EventCounter(self.lanes)
        code_nan = getattr(eng, "code_nan", None)
        n_fields = len(f.scale_fields) * self.blocks_per_beat
        m.submodules.nonfinite_counter = nf_ctr = EventCounter(n_fields + (len(code_nan) if code_nan is not None else 0))
        if saturating:
            m.d.comb += self.saturated_count.eq(sat_ctr.count)
        m.d.comb += self.nonfinite_count.eq(nf_ctr.count)

        en = None  # every register loads on every clock (see the module docstring)
        beats = self.beats_per_block
        m.submodules.out_queue = out = CreditQueue(self.o.payload.shape(), self.out_queue_depth,
                                                   per_take=beats)
        wiring.connect(m, out.o, wiring.flipped(self.o))

        # Holding register: one input beat, handed out as beats_per_block output beats, one a clock.
        hold = Signal.like(self.i.payload, reset_less=True)
        held = Signal()
        beat = Signal(range(beats))
        last = beat == beats - 1
        take = held
        m.d.comb += [self.i.ready.eq((~held | last) & out.room),
                     out.take.eq(self.i.valid & self.i.ready)]
        # hold loads by a Mux rather than under the If: a reset-less register's next value built
        # in the If would be an always block no reset wakes (tests/top/test_generated_verilog.py).
        accepted = self.i.valid & self.i.ready
        m.d.sync += hold.eq(Mux(accepted, self.i.payload, hold))
        with m.If(accepted):
            m.d.sync += [held.eq(1), beat.eq(0)]
        with m.Elif(take):
            with m.If(last):
                m.d.sync += held.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        # Stage 1: scale fields read by the engine's rule, this beat's codes.
        block_bits, field_bits = 8 * f.block_bytes, 8 * f.scale_bytes
        flags = []
        for b in range(self.blocks_per_beat):
            block = hold[block_bits * b:block_bits * (b + 1)]
            for k, name in enumerate(f.scale_fields):
                clean, nonfinite = eng.field_rule(m, block[field_bits * k:field_bits * (k + 1)])
                m.d.comb += getattr(eng, name)[b].eq(reg(m, en, clean, name=f"{name}{b}_s1", reset=False))
                flags.append(reg(m, en, nonfinite, name=f"{name}{b}_nf", reset=False))
            codes = self._block_codes(block)
            if self.lanes >= BLOCK_ELEMS:
                for e in range(BLOCK_ELEMS):
                    m.d.comb += eng.codes[BLOCK_ELEMS * b + e].eq(reg(m, en, codes[e], name=f"c{b}_{e}", reset=False))
            else:
                for e in range(self.lanes):
                    pick = lookup(beat, [codes[k * self.lanes + e] for k in range(self.beats_per_block)],
                                  f.code_bits)
                    m.d.comb += eng.codes[e].eq(reg(m, en, pick, name=f"c{e}", reset=False))
        first = Signal()  # stage 1 holds the first beat of a block: count its fields once
        valid = Signal()
        m.d.sync += [valid.eq(held), first.eq(take & (beat == 0))]
        if code_nan is None:  # fields only: a block's count once, when its first beat moves on
            m.d.comb += [nf_ctr.events.eq(Cat(*flags)), nf_ctr.fire.eq(first)]
        else:  # NaN codes count on every beat, the fields still once per block
            m.d.comb += [nf_ctr.events.eq(Cat(*(flag & first for flag in flags), flat(code_nan))),
                         nf_ctr.fire.eq(valid)]

        # The engine's stages; its last register enters the output queue.
        m.d.comb += eng.en.eq(1)
        chain = [valid]
        for k in range(eng.latency):
            chain.append(reg(m, en, chain[-1], f"valid_{k + 2}", reset=True))
        m.d.comb += [
            out.i.valid.eq(chain[-1]),
            out.i.payload.eq(flat(eng.value)),
        ]

        # Saturations count when their beat enters the output queue, so that the count is
        # complete before the beat can be taken.
        if saturating:
            entered = Signal()
            m.d.sync += entered.eq(chain[-2])
            m.d.comb += [sat_ctr.events.eq(flat(eng.sat)), sat_ctr.fire.eq(entered)]
        return m
