"""The quantizer: FP16 or BF16 beats in, one block per beat out.

``Quantizer(fmt, lanes, elem)`` is the format-independent framework around a format's
``FormatDatapath`` (see ``quant_units``):

1. Input: each accepted beat's elements are sanitized (+-Inf -> +-max finite of ``elem``, NaN -> +0) and counted
   when non-finite. The sanitized beat is written to the *beat store* and given to the block unit.
2. Block: the format's block unit reduces each beat as it is accepted (a tree as wide as a beat,
   then a register that joins a block's beats: ``contract.BlockUnitSignature``) and yields the
   block header and the per-block constants ``latency`` clocks after the block's last beat.
3. Serialize: when the block leaves the block unit, its beats are read back from the beat store one
   per cycle and presented, with the block's constants, to ``lanes`` lane units. The store is a
   small memory, so serializing costs no per-element multiplexer. With ``lanes == 32`` a block is a
   single beat and the store only bridges the block unit's latency; a register delay line would cost
   ``latency x 512`` flip-flops there, the store a few LUT-RAMs.
4. Pack: each beat's codes are written straight into the block register at their ggml byte
   positions; the block's last beat also writes the header, and on the next clock the block
   enters the output queue.

Flow control: the pipeline never stalls. Every register, in the framework and in the units,
loads on every clock (no clock enable, so no enable net fans out to them), and stage valid bits
carry bubbles. Back-pressure is taken by the *output queue* (a LUT-RAM FIFO),
which has a place reserved for each block as its first beat is accepted (``lib.streams.CreditQueue``):
``i.ready`` is high inside a block and, at a block's first beat, while a place is free. So
``i.ready`` is a function of registers only, and no ready path enters the pipeline; ``o`` is the
queue's output register, held while ``o.valid & ~o.ready``. The queue holds every block that can
be in flight between acceptance and output (``queue_depth``), so with ``o.ready`` high the
quantizer accepts a beat on every cycle. A block needs 32/lanes input beats, so block tokens leave
the block unit at least that many cycles apart and the serializer is always free when the next
one arrives.

Rate: a format may code fewer elements per clock than the stream has lanes
(``BlockFormat.quant_elems_per_clock``, ``KVPathConfig.quant_elems_per_clock``). q4_1 codes 4: its
exact lane needs two DSP48E2 for one element, and a write path that takes one token per decode
step has no use for 16 a clock (docs/benchmarks.md, "q4_1 at 4 elements per clock"). The
quantizer is then a ``BeatSplitter`` in front of a core of that many lanes, which is this frame.

"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from kvpath.config import (BLOCK_ELEMS, ELEM_BITS, QUANT_ELEMS_PER_CLOCK, QUANT_LANES, check_elem, get_format,
                           load, quant_rate)

from kvpath.hdl.lib.bits import tree_sum
from kvpath.hdl.lib.pipe import delay, reg
from kvpath.hdl.lib.streams import BeatSplitter, CreditQueue
from kvpath.hdl.quant.contract import FormatDatapath
from kvpath.packing import code_offset

# Fraction bits and largest finite magnitude of each element type.
ELEM_FRAC_BITS = {"fp16": 10, "bf16": 7}
ELEM_MAX = {"fp16": 0x7BFF, "bf16": 0x7F7F}
COUNT_LAG = 4


def datapath_for(fmt: str, elem: str = "fp16") -> FormatDatapath:
    """The format's datapath (``config.FORMATS[fmt].datapath``), imported on first use."""
    f = get_format(fmt)
    if f.datapath is None:
        raise ValueError(f"{fmt} has no per-block quantizer datapath; its write path is "
                         f"{f.family_info.quantizer}")
    return load(f.datapath)(f.name, check_elem(elem))


def sanitize(m: Module, x, elem: str = "fp16"):
    """kvpath's input rule: +-Inf -> +-max finite, NaN -> +0; returns (sanitized, non-finite)."""
    frac = ELEM_FRAC_BITS[elem]
    exp_max = x[frac:15].all()
    frac_zero = x[:frac] == 0
    y = Signal(ELEM_BITS)
    # An expression rather than If assignments (lib/bits.py leading_zeros says why).
    m.d.comb += y.eq(Mux(exp_max, Mux(frac_zero, Cat(Const(ELEM_MAX[elem], 15), x[15]), 0), x))
    return y, exp_max



class Quantizer(wiring.Component):
    """``lanes`` elements per input beat, one block per output beat, ``elems_per_clock`` elements
    coded per clock: by default the format's ``quant_elems_per_clock`` (q4_1: 4), else ``lanes``.
    A narrower rate puts a ``BeatSplitter`` before a quantizer core of ``elems_per_clock`` lanes
    (``core``); the stream then takes a beat every ``lanes // elems_per_clock`` clocks, and
    ``nonfinite_count`` counts each part as the core takes it (``COUNT_LAG`` clocks later)."""

    def __init__(self, fmt: str, lanes: int, elem: str = "fp16", elems_per_clock: int | None = None):
        if lanes not in QUANT_LANES + QUANT_ELEMS_PER_CLOCK:
            allowed = sorted(set(QUANT_LANES + QUANT_ELEMS_PER_CLOCK))
            raise ValueError(f"quantizer lanes must be one of {allowed}, got {lanes}")
        self.fmt = get_format(fmt)
        self.lanes = lanes
        self.elem = check_elem(elem)
        self.beats_per_block = BLOCK_ELEMS // lanes
        self.elems_per_clock = self.rate(fmt, lanes, elems_per_clock)
        self.datapath = datapath_for(fmt, elem)
        self.core = None  # the narrower core, once elaborated
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(ELEM_BITS), lanes))),
            "o": Out(stream.Signature(unsigned(8 * self.fmt.block_bytes))),
            "nonfinite_count": Out(unsigned(32)),
        })

    rate = staticmethod(quant_rate)  # elements coded per clock, from the arguments (kvpath.config)

    @property
    def stall_beats(self) -> int:
        """Input beats taken while ``o.ready`` stays low, once elaborated: the output queue's blocks
        (it holds ``out_queue_depth + 1``), plus the splitter's beat when there is one."""
        if self.core is not None:
            return self.core.stall_beats * self.elems_per_clock // self.lanes + 1
        return (self.out_queue_depth + 1) * self.beats_per_block

    @staticmethod
    def queue_depth(beats: int, block_latency: int, lane_latency: int) -> int:
        """Output queue entries: a block is reserved at its first beat and freed when it leaves the
        queue, ``2 * beats + block_latency + lane_latency`` cycles of pipeline plus the queue's own
        two (write, read register) and the credit register's one later; at one beat per clock that
        many cycles hold ``cycles / beats`` blocks, rounded up, plus the one being accepted. The
        queue holds ``depth + 1`` (its output register)."""
        cycles = 2 * beats + block_latency + lane_latency + 4
        return CreditQueue.depth_for(-(-cycles // beats))

    def elaborate(self, platform):
        if self.elems_per_clock < self.lanes:
            self.core = Quantizer(self.fmt.name, self.elems_per_clock, self.elem, self.elems_per_clock)
            return self._split(self.core)
        m = Module()
        lanes, beats = self.lanes, self.beats_per_block
        en = None  # every register loads on every clock (see the module docstring)
        accept = Signal()

        m.submodules.block_unit = bu = self.datapath.block_unit(lanes)
        # The unit's latency counts from a block's last beat; the framework's own bookkeeping
        # (bu_valid, the beat store, the queue) counts from the clock after it.
        block_latency = bu.latency - 1
        lane_units = [self.datapath.lane_unit() for _ in range(lanes)]
        depth = self.queue_depth(beats, block_latency, lane_units[0].latency)
        self.out_queue_depth = depth  # for benches: the queue holds depth + 1 blocks
        m.submodules.out_queue = out = CreditQueue(self.o.payload.shape(), depth)
        wiring.connect(m, out.o, wiring.flipped(self.o))

        beat_in = Signal(range(beats))
        first_in = beat_in == 0
        m.d.comb += [
            self.i.ready.eq(~first_in | out.room),  # a block's place is reserved at its first beat
            accept.eq(self.i.valid & self.i.ready),
            out.take.eq(accept & first_in),
        ]

        # 1. Sanitize and count.
        san = Signal(data.ArrayLayout(unsigned(ELEM_BITS), lanes))
        nonfinite = Signal(lanes)
        for k in range(lanes):
            y, bad = sanitize(m, self.i.payload[k], self.elem)
            m.d.comb += [san[k].eq(y), nonfinite[k].eq(bad)]
        self._count(m, accept, nonfinite)

        # 2. Collect a block and run the block unit.
        last_in = Signal()
        m.d.comb += last_in.eq(beat_in == beats - 1)
        with m.If(accept):
            m.d.sync += beat_in.eq(Mux(last_in, 0, beat_in + 1))
        blk_valid = Signal()
        m.d.sync += blk_valid.eq(accept & last_in)
        # The block unit reduces each beat as it is accepted: no collect buffer, no input block register.
        m.d.comb += [bu.en.eq(1), bu.beat.eq(san), bu.take.eq(accept), bu.first.eq(first_in)]
        bu_valid = delay(m, en, blk_valid, block_latency, "bu_valid", reset=True, names="{name}{k1}")

        # 3. Serialize: the lane inputs of beat k of a block appear k cycles after its token.
        ser_valid = Signal()
        ser_beat = Signal(range(beats))
        ser_header = Signal.like(bu.header)
        ser_const = Signal.like(bu.const)
        with m.If(bu_valid):
            m.d.sync += [ser_header.eq(bu.header), ser_const.eq(bu.const)]
        ser_x = self._beat_source(m, accept, san, bu_valid, block_latency, ser_valid, ser_beat)

        for k, lu in enumerate(lane_units):
            m.submodules[f"lane{k}"] = lu
            m.d.comb += [lu.en.eq(1), lu.x.eq(ser_x[k]), lu.const.eq(ser_const)]
        latency = lane_units[0].latency
        lv, lbeat, lheader = ser_valid, ser_beat, ser_header
        for k in range(latency):
            lv, lbeat, lheader = (reg(m, en, v, f"{name}{k + 1}", reset=True) for v, name in
                                  ((lv, "lane_valid"), (lbeat, "lane_beat"), (lheader, "lane_header")))

        # 4. Pack into the block register, which enters the queue on the clock after its last beat.
        payload = Signal(len(self.o.payload), name="block_out")
        done = Signal()
        code_bits = self.fmt.code_bits
        m.d.sync += done.eq(lv & (lbeat == beats - 1))
        with m.If(lv & (lbeat == beats - 1)):
            m.d.sync += payload[:len(lheader)].eq(lheader)
        for b in range(beats):
            with m.If(lv & (lbeat == b)):
                for k, lu in enumerate(lane_units):
                    at = code_offset(self.fmt, b * lanes + k)
                    m.d.sync += payload[at:at + code_bits].eq(lu.code)
        m.d.comb += [out.i.valid.eq(done), out.i.payload.eq(payload)]
        return m

    def _split(self, core):
        """The narrower rate: the splitter's ready follows the core's, which is a register."""
        m = Module()
        m.submodules.split = split = BeatSplitter(unsigned(ELEM_BITS), self.lanes, self.elems_per_clock)
        m.submodules.core = core
        wiring.connect(m, wiring.flipped(self.i), split.i)
        wiring.connect(m, split.o, core.i)
        wiring.connect(m, core.o, wiring.flipped(self.o))
        m.d.comb += self.nonfinite_count.eq(core.nonfinite_count)
        return m

    def _beat_source(self, m, accept, san, bu_valid, bu_latency, ser_valid, ser_beat):
        """Drive ``ser_valid``/``ser_beat`` and return the lane inputs (a registered beat)."""
        beats = self.beats_per_block
        # Beat k of a block is read bu_latency + 1 + k cycles after the block's last beat
        # was written, so at most beats + bu_latency + 1 writes (its own block's from beat k on,
        # one per cycle after) can land before it is read: a deeper store never overwrites an
        # unread beat, and never relies on read-during-write behaviour.
        depth = 1 << (beats + bu_latency + 1).bit_length()
        m.submodules.beat_store = store = Memory(shape=san.shape(), depth=depth, init=[])
        wr = store.write_port()
        rd = store.read_port(domain="sync")
        wptr = Signal(range(depth))
        rptr = Signal(range(depth))
        left = Signal(range(beats))
        reading = Signal()
        m.d.comb += [
            wr.addr.eq(wptr), wr.data.eq(san), wr.en.eq(accept),
            reading.eq(bu_valid | (left != 0)),
            rd.addr.eq(rptr),
        ]
        with m.If(accept):
            m.d.sync += wptr.eq(wptr + 1)
        m.d.sync += ser_valid.eq(reading)
        with m.If(reading):
            m.d.sync += rptr.eq(rptr + 1)
        with m.If(bu_valid):
            m.d.sync += [left.eq(beats - 1), ser_beat.eq(0)]
        with m.Elif(left != 0):
            m.d.sync += [left.eq(left - 1), ser_beat.eq(ser_beat + 1)]
        return rd.data

    def _count(self, m, accept, nonfinite):
        """Pipelined popcount of accepted non-finite flags into a 32-bit counter."""
        flags = Signal.like(nonfinite)
        m.d.sync += flags.eq(Mux(accept, nonfinite, 0))
        group = 8
        partial = []
        for k in range(0, len(flags), group):
            bits = flags[k:k + group]
            s = Signal(range(group + 1), name=f"nonfinite_part{k // group}")
            m.d.sync += s.eq(tree_sum([bits[j] for j in range(len(bits))]))
            partial.append(s)
        total = Signal(range(len(flags) + 1))
        m.d.sync += total.eq(tree_sum(partial))
        m.d.sync += self.nonfinite_count.eq(self.nonfinite_count + total)
