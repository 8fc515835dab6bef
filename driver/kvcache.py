"""The KV cache driver (docs/kvcache.md): one synchronous driver over any ``Transport``.

``KVCache`` programs the engine (format check, HEAD_DIM, layer and region tables, ring classes),
turns tokens into ``s_axis_kv`` vectors, reads a head's cache back through a READ command and checks
what comes back, and reports status, counters, the raw DDR image and a JSON-able manifest. The same
code runs on the engine model (``kvpath.golden.kvcache.KVCacheModel``), a simulated RTL and the
board; it touches registers only through ``Registers`` (names from the JSON map, no addresses).

The driver keeps one golden ring (``kvpath.golden.ring.RingModel``) per (sequence, class) in step
with the hardware's trackers, so it knows how many vectors a READ returns and their positions
without asking the hardware, and checks the hardware's answer against them.

Layers: the hardware holds the KV-owning layers of the model, numbered 0.. in model order (for
Gemma 3n E4B they are model layers 0..19). ``append`` takes arrays ``[kv_layers, kv_heads,
head_dim]``; ``read``, ``evict_upto``, ``region_image`` take a model layer and use the cache of the
layer it reads (its ``kv_source``).

Example::

    cache = KVCache(transport, KVPathConfig(fmt="q8_0"))
    cache.configure("gemma-3n-e4b", kv_max_tokens=4096)
    cache.append(0, k, v)                       # one token
    values, positions = cache.read(0, layer=4, head=1, kv=0)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from kvpath import layout
from kvpath.config import BLOCK_ELEMS, KVPathConfig
from kvpath.driver.kv_budget import MemoryBudgetError
from kvpath.driver.kv_policy import ERROR, LayerPolicy
from kvpath.driver.presets import GLOBAL, LOCAL, ModelSpec, describe_model, get_preset
from kvpath.driver.regs import Registers
from kvpath.driver.ring_manager import POS_LIMIT, KVOverflowError
from kvpath.driver.transport import check_transport
from kvpath.elements import stream_element
from kvpath.golden import static
from kvpath.golden.ring import RingConfig, RingModel
from kvpath.layout import Op
from kvpath.regmap import build_map, json_map
from kvpath.scales import entry_index

COUNT_MOD = 1 << 32  # the event counters the driver waits on are 32 bits wide and wrap


class KVCacheError(RuntimeError):
    """The engine reported a failure; the message names the transaction."""


class BusError(KVCacheError):
    """A register access failed at the transport (SLVERR, or the transport's own error)."""


class DDRError(KVCacheError):
    """An AXI4 master of the engine got SLVERR or DECERR (STATUS.ddr_error, DDR_ERRORS)."""


class CommandError(KVCacheError):
    """The engine refused a command (STATUS.cmd_error, CMD_ERRORS)."""


class VectorsDropped(KVCacheError):
    """The engine consumed vectors without writing them (STATUS.vector_dropped, VECTORS_DROPPED)."""


class ReadMismatch(KVCacheError):
    """A READ's beats were not what the driver's ring model says (count, positions, TLAST)."""


class FormatMismatch(ValueError):
    """The cache asks for a format the bitstream was not built for."""


@dataclass(frozen=True)
class RingClass:
    """A policy class: the layers sharing one ring configuration, hence one tracker per sequence."""

    index: int
    ring: RingConfig
    overflow: str
    layers: tuple[int, ...]  # hardware (KV-owning) layers


@dataclass(frozen=True)
class Region:
    seq: int
    layer: int  # hardware layer
    head: int
    kv: int
    index: int  # row of the region table
    base: int
    slots: int


@dataclass(frozen=True)
class Setup:
    model: ModelSpec
    head_dim: int
    seqs: int
    kv_max_tokens: int
    hw_layer: dict[int, int]  # model layer -> hardware layer of the cache it reads
    classes: tuple[RingClass, ...]
    layer_class: tuple[int, ...]  # per hardware layer
    regions: dict[tuple[int, int, int, int], Region]  # (seq, hw layer, head, kv)

    @property
    def kv_layers(self) -> int:
        return len(self.layer_class)


class _NamedLink:
    """The transport's register calls, with failures turned into ``BusError`` naming the driver's
    transaction and the register."""

    def __init__(self, transport, regmap: dict, base: int):
        self.io = transport
        self.names = {base + r["offset"]: r["name"] for r in regmap["registers"]}
        self.doing = "register access"

    def _fail(self, access: str, addr: int, error: Exception) -> BusError:
        return BusError(f"{self.doing}: {access} {self.names.get(addr, '?')} (0x{addr:x}) failed: {error}")

    def read32(self, addr: int) -> int:
        try:
            return self.io.read32(addr)
        except Exception as e:
            raise self._fail("read of", addr, e) from e

    def write32(self, addr: int, value: int) -> None:
        try:
            self.io.write32(addr, value)
        except Exception as e:
            raise self._fail(f"write of 0x{value:x} to", addr, e) from e


class KVCache:
    def __init__(self, transport, config: KVPathConfig, *, regmap: dict | None = None, reg_base: int = 0,
                 poll_limit: int = 100_000):
        """``regmap``: the bitstream's ``kvpath_regs.json`` (loaded); by default the map ``config``
        builds, which ``check_bitstream`` holds the hardware to anyway."""
        check_transport(transport)
        self.io = transport
        self.config = config
        self.regmap = regmap if regmap is not None else json_map.to_dict(build_map(config))
        self._link = _NamedLink(transport, self.regmap, reg_base)
        self.regs = Registers(self._link, self.regmap, base=reg_base)
        self.poll_limit = poll_limit
        self.dtype = stream_element(config.elem).dtype
        self._kv_tag = layout.kv_tag(config)
        self._read_tag = layout.read_tag(config)
        self._command_word = layout.command_word(config)
        self.setup: Setup | None = None
        self._cmd_arg: int | None = None  # unknown until the driver writes it
        self._rings: dict[tuple[int, int], RingModel] = {}
        self._restart_accounting()

    # --- transactions and waiting -----------------------------------------------------------------
    @contextmanager
    def _doing(self, what: str):
        outer, self._link.doing = self._link.doing, what
        try:
            yield
        finally:
            self._link.doing = outer

    def _poll(self, what: str, done: Callable[[], bool]) -> None:
        for _ in range(self.poll_limit):
            if done():
                return
        raise KVCacheError(f"{what}: not done after {self.poll_limit} polls; STATUS {self.status()}")

    def _restart_accounting(self) -> None:
        """What the driver has sent and issued, and the counter values it has accounted for, from
        a point where the counters were cleared."""
        self._sent = 0
        self._issued = 0
        self._seen = {"vectors_dropped": 0, "ddr_errors": 0, "cmd_errors": 0}
        self._write_failures = 0  # failed row writes accounted for: settled vectors, neither written nor dropped
        self._unflushed: list[str] = []

    def _counter(self, port: str) -> int:
        return self.regs.read_counter(port)

    def _moved(self, port: str) -> int:
        return (self._counter(port) - self._seen[port]) % COUNT_MOD

    def _account(self, port: str, n: int) -> None:
        self._seen[port] = (self._seen[port] + n) % COUNT_MOD

    # --- configuration ----------------------------------------------------------------------------
    def check_bitstream(self) -> None:
        with self._doing("check_bitstream"):
            self._check_format(self.config.fmt)
            self.regs.check_bitstream(self.config)

    def _check_format(self, fmt: str) -> None:
        names = {code: name for name, code in self.regmap["format_codes"].items()}
        hardware = names.get(self.regs.read_field("CFG_FORMAT", "format"), "an unknown format")
        if fmt != self.config.fmt or hardware != fmt:
            raise FormatMismatch(f"KV cache format {fmt} refused: the driver's build is {self.config.fmt}, "
                                 f"the bitstream's is {hardware}")

    def configure(self, model: ModelSpec | str | None = None, *, layers: int | None = None,
                  kv_heads: int | None = None, head_dim: int | None = None,
                  policies: dict[str, LayerPolicy] | None = None,
                  layer_policies: dict[int, LayerPolicy] | None = None,
                  kv_max_tokens: int | None = None, fmt: str | None = None, seqs: int = 1) -> Setup:
        """Program the engine for a model and empty every ring.

        ``model``: a preset name, a ``ModelSpec``, or None with ``layers``/``kv_heads``/``head_dim``
        (every layer global). ``policies`` by attention type (default: full context for global
        layers, a sliding window of ``local_window`` for local ones); ``layer_policies`` by model
        layer. ``kv_max_tokens`` caps every ring (default: the build's). ``fmt``, if given, must be
        the build's format.
        """
        spec = self._model(model, layers, kv_heads, head_dim)
        setup = self._plan(spec, policies or {}, layer_policies or {}, kv_max_tokens, seqs)
        with self._doing(f"configure {spec.name}"):
            self._check_format(fmt or self.config.fmt)
            self.regs.check_bitstream(self.config)
            self.regs.write_field("CTRL", "enable", 0)
            self._program(setup)
            self.setup = setup
            self._rings = {}
            self._clear_all_rings()
            self.regs.write_field("CTRL", "enable", 1)
        return setup

    def _model(self, model, layers, kv_heads, head_dim) -> ModelSpec:
        if isinstance(model, str):
            return get_preset(model)
        if isinstance(model, ModelSpec):
            return model
        if model is not None:
            raise ValueError(f"model must be a preset name, a ModelSpec or None, got {type(model).__name__}")
        if None in (layers, kv_heads, head_dim):
            raise ValueError("without a model preset, configure needs layers, kv_heads and head_dim")
        return describe_model("explicit", n_layers=layers, kv_heads=kv_heads, head_dim=head_dim)

    def _plan(self, spec: ModelSpec, policies, layer_policies, kv_max_tokens, seqs) -> Setup:
        c = self.config
        cap = c.kv_max_tokens if kv_max_tokens is None else kv_max_tokens
        kv_layers = spec.kv_layers
        problems = []
        if len(kv_layers) > c.max_layers:
            problems.append(f"{len(kv_layers)} KV layers > max_layers {c.max_layers}")
        if spec.kv_heads > c.max_kv_heads:
            problems.append(f"{spec.kv_heads} KV heads > max_kv_heads {c.max_kv_heads}")
        if not layout.head_dim_ok(c, spec.head_dim):
            problems.append(f"head_dim {spec.head_dim} is not a multiple of {BLOCK_ELEMS} and of the lanes "
                            f"({c.quant_lanes}, {c.dequant_lanes}) within 1..{c.max_head_dim}")
        if not 1 <= seqs <= c.max_seqs:
            problems.append(f"seqs {seqs} outside 1..max_seqs {c.max_seqs}")
        if not 1 <= cap <= c.kv_max_tokens:
            problems.append(f"kv_max_tokens {cap} outside 1..{c.kv_max_tokens}")
        if problems:
            raise ValueError(f"{spec.name} does not fit the build: " + "; ".join(problems))
        hw_of_model = {la.index: n for n, la in enumerate(kv_layers)}
        defaults = {GLOBAL: LayerPolicy.full()}
        if spec.local_window:
            defaults[LOCAL] = LayerPolicy.sliding(spec.local_window)
        defaults.update(policies)
        keys = []
        for la in kv_layers:
            policy = layer_policies.get(la.index, defaults[la.attention])
            keys.append((policy.ring_config(cap).check(c.kv_max_tokens), policy.overflow))
        distinct = list(dict.fromkeys(keys))
        if len(distinct) > c.n_classes:
            raise ValueError(f"{len(distinct)} distinct ring configurations need as many classes; the build has "
                             f"n_classes={c.n_classes}: {[ring for ring, _ in distinct]}")
        layer_class = tuple(distinct.index(k) for k in keys)
        classes = tuple(RingClass(n, ring, overflow, tuple(l for l, k in enumerate(layer_class) if k == n))
                        for n, (ring, overflow) in enumerate(distinct))
        regions = self._place_regions(spec, classes, layer_class, seqs)
        hw_layer = {la.index: hw_of_model[la.kv_source] for la in spec.layers}
        return Setup(spec, spec.head_dim, seqs, cap, hw_layer, classes, layer_class, regions)

    def _place_regions(self, spec: ModelSpec, classes, layer_class, seqs) -> dict:
        """Regions packed from ``mem_base``: each gets its class's KV_MAX_TOKENS rows, no more."""
        row = layout.row_bytes(self.config, spec.head_dim)
        regions, offset = {}, 0
        for seq in range(seqs):
            for layer, cls in enumerate(layer_class):
                slots = classes[cls].ring.kv_max_tokens
                for head in range(spec.kv_heads):
                    for kv in (0, 1):
                        index = layout.region_index(self.config, seq, layer, head, kv)
                        regions[(seq, layer, head, kv)] = Region(seq, layer, head, kv, index,
                                                                 self.io.mem_base + offset, slots)
                        offset += slots * row
        if offset > self.io.mem_bytes:
            raise MemoryBudgetError(f"{spec.name}: the regions need {offset:,} bytes, the DDR window has "
                                    f"{self.io.mem_bytes:,}")
        return regions

    def _program(self, setup: Setup) -> None:
        regs = self.regs
        regs.write("HEAD_DIM", setup.head_dim)
        if regs.read_field("STATUS", "head_dim_err"):
            raise KVCacheError(f"HEAD_DIM {setup.head_dim} refused by the hardware (STATUS.head_dim_err)")
        # Layers the model does not use get the class one beyond the last, so stray vectors drop.
        unused = self.config.n_classes
        classes = list(setup.layer_class) + [unused] * (self.config.max_layers - setup.kv_layers)
        regs.write_stream("layer_write", classes, index=0)
        self._write_region_table(sorted(setup.regions.values(), key=lambda r: r.index))
        regs.write_field("CTRL", "counter_clear", 1)
        regs.write("STATUS", self._sticky_mask())
        self._restart_accounting()

    def _write_region_table(self, regions: list[Region]) -> None:
        """One REGION_BASE_LO per row; REGION_INDEX only where rows are not consecutive, HI only
        where the upper bits change."""
        next_index, high = None, None
        for r in regions:
            if r.index != next_index:
                self.regs.write("REGION_INDEX", r.index)
            if r.base >> 32 != high:
                high = r.base >> 32
                self.regs.write("REGION_BASE_HI", high)
            self.regs.write("REGION_BASE_LO", r.base & 0xFFFF_FFFF)
            next_index = r.index + 1

    def _sticky_mask(self) -> int:
        return sum(1 << f["lsb"] for f in self.regs.register("STATUS")["fields"] if f["access"] == "w1c")

    def _require_setup(self) -> Setup:
        if self.setup is None:
            raise ValueError("the KV cache is not configured: call configure() first")
        return self.setup

    # --- rings ------------------------------------------------------------------------------------
    def _clear_all_rings(self) -> None:
        setup = self._require_setup()
        for seq in range(setup.seqs):
            self._clear_sequence(seq)

    def _clear_sequence(self, seq: int) -> None:
        setup = self._require_setup()
        for cls in setup.classes:
            ring = cls.ring
            self.regs.write("RING_MAX_TOKENS", ring.kv_max_tokens)
            self.regs.write("RING_SINKS", ring.n_sink)
            self.regs.write("RING_WINDOW", ring.n_window)
            self._issue(Op.CLEAR, seq=seq, cls=cls.index)
            self._rings[(seq, cls.index)] = RingModel(ring.kv_max_tokens, ring.n_sink, ring.n_window,
                                                      max_tokens=self.config.kv_max_tokens, pos_limit=POS_LIMIT)
        self._wait_commands(f"CLEAR of sequence {seq}")

    def _issue(self, op: Op, *, arg: int | None = None, **fields) -> None:
        # CMD_ARG keeps its value, so it is written only when a command's argument differs from it.
        if arg is not None and arg != self._cmd_arg:
            self.regs.write("CMD_ARG", arg)
            self._cmd_arg = arg
        self.regs.write("CMD", layout.pack(self._command_word, op=op, **fields))
        self._issued += 1

    def _wait_commands(self, what: str) -> None:
        with self._doing(what):
            self._poll(what, lambda: self._counter("commands_done") == self._issued % COUNT_MOD)
            refused = self._moved("cmd_errors")
            if refused:
                self._account("cmd_errors", refused)
                raise CommandError(f"{what}: the engine refused {refused} command(s) (STATUS.cmd_error)")

    def _check_seq(self, seq: int) -> None:
        if not 0 <= seq < self._require_setup().seqs:
            raise ValueError(f"sequence {seq} outside 0..{self.setup.seqs - 1}")

    def _layer(self, layer: int) -> int:
        """Hardware layer of the cache a model layer reads."""
        hw = self._require_setup().hw_layer.get(layer)
        if hw is None:
            raise ValueError(f"layer {layer} outside the model's {self.setup.model.n_layers} layers")
        return hw

    def _class_of(self, *, layer: int | None, cls: int | None) -> int:
        setup = self._require_setup()
        if (layer is None) == (cls is None):
            raise ValueError("name exactly one of layer= and cls=")
        if cls is None:
            return setup.layer_class[self._layer(layer)]
        if not 0 <= cls < len(setup.classes):
            raise ValueError(f"class {cls} outside 0..{len(setup.classes) - 1}")
        return cls

    def ring(self, seq: int, *, layer: int | None = None, cls: int | None = None) -> RingModel:
        """The driver's model of a ring (for inspection; do not change it)."""
        self._check_seq(seq)
        return self._rings[(seq, self._class_of(layer=layer, cls=cls))]

    # --- appending ---------------------------------------------------------------------------------
    def append(self, seq: int, k: np.ndarray, v: np.ndarray) -> int:
        """Send one token's K and V vectors (``[kv_layers, kv_heads, head_dim]`` each, of the build's
        element type). Returns the token's position. Does not wait: ``flush`` (and every read or
        command) checks that the engine wrote them."""
        setup = self._require_setup()
        self._check_seq(seq)
        shape = (setup.kv_layers, setup.model.kv_heads, setup.head_dim)
        for name, x in (("k", k), ("v", v)):
            if not isinstance(x, np.ndarray) or x.shape != shape or x.dtype != self.dtype:
                got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
                raise ValueError(f"append: {name} must be a {self.dtype} array of shape {shape}, got {got}")
        self._check_overflow(seq)
        position = self._rings[(seq, 0)].appended
        beats = self._token_beats(seq, k, v)
        for cls in setup.classes:
            self._rings[(seq, cls.index)].append()
        what = f"append of token {position} of sequence {seq}"
        try:
            self.io.send_kv(beats)
        except Exception as e:
            # The likeliest cause, named from the hardware's own state rather than the transport's words.
            cause = " (CTRL.enable is 0: the engine takes no vectors)" if not self._enabled() else ""
            raise KVCacheError(f"{what}: s_axis_kv did not take the vectors{cause}: {e}") from e
        self._sent += 2 * setup.kv_layers * setup.model.kv_heads
        self._unflushed.append(what)
        return position

    def _check_overflow(self, seq: int) -> None:
        for cls in self.setup.classes:
            ring = self._rings[(seq, cls.index)]
            if cls.overflow == ERROR and ring.would_evict():
                raise KVOverflowError(f"sequence {seq}, class {cls.index} (layers {list(cls.layers)}): the ring "
                                      f"holds {ring.n_valid} tokens and its policy forbids eviction")
            if ring.appended >= POS_LIMIT:
                raise KVOverflowError(f"sequence {seq}: the position counter is full; reset_sequence first")

    def _token_beats(self, seq: int, k: np.ndarray, v: np.ndarray) -> list[tuple[int, int, bool]]:
        setup = self.setup
        lanes = self.config.quant_lanes
        per_vector = setup.head_dim // lanes
        bits = np.stack([k, v], axis=1).view(np.uint16)  # [layer, kv, head, head_dim]
        beats, first_of_class = [], set()
        for layer in range(setup.kv_layers):
            cls = setup.layer_class[layer]
            for kv in (0, 1):
                for head in range(setup.model.kv_heads):
                    append = cls not in first_of_class
                    first_of_class.add(cls)
                    tuser = layout.pack(self._kv_tag, append=int(append), kv=kv, head=head, layer=layer, seq=seq)
                    words = bits[layer, kv, head].astype("<u2").reshape(per_vector, lanes)
                    for n, word in enumerate(words):
                        beats.append((int.from_bytes(word.tobytes(), "little"), tuser, n == per_vector - 1))
        return beats

    def _enabled(self) -> bool:
        try:
            return bool(self.regs.read_field("CTRL", "enable"))
        except Exception:
            return True  # no better explanation to offer than the transport's

    def flush(self) -> None:
        """Wait until the engine has settled every vector sent (written, dropped, or failed in DDR);
        raise if any was dropped or its DDR write failed, naming the appends since the last flush."""
        what = ", ".join(self._unflushed[:3]) + (f" and {len(self._unflushed) - 3} more"
                                                 if len(self._unflushed) > 3 else "")
        what = what or "vectors sent before"

        def settled() -> bool:
            # Reads are synchronous, so DDR_ERRORS moved since the last account are failed row writes.
            done = (self._counter("vectors_written") + self._counter("vectors_dropped") + self._write_failures
                    + self._moved("ddr_errors")) % COUNT_MOD
            return (done - self._sent) % COUNT_MOD < COUNT_MOD // 2

        with self._doing(f"flush after {what}"):
            self._poll(f"flush after {what}", settled)
            dropped, failed = self._moved("vectors_dropped"), self._moved("ddr_errors")
        self._account("vectors_dropped", dropped)
        self._account("ddr_errors", failed)
        self._write_failures += failed
        self._unflushed = []
        if dropped:
            raise VectorsDropped(f"{what}: the engine dropped {dropped} vector(s) (STATUS.vector_dropped); "
                                 "the driver's rings may be out of step: reset_sequence")
        if failed:
            raise DDRError(f"{what}: {failed} row write(s) failed on the AXI4 master (STATUS.ddr_error)")

    # --- commands ------------------------------------------------------------------------------------
    def read(self, seq: int, layer: int, head: int, kv: int, port: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A head's valid K (``kv=0``) or V (``kv=1``) vectors in attention order: ``(values [n, head_dim]
        of the element type, original positions [n])``."""
        setup = self._require_setup()
        self._check_seq(seq)
        hw = self._layer(layer)
        if not 0 <= head < setup.model.kv_heads or kv not in (0, 1):
            raise ValueError(f"read: head {head} / kv {kv} outside 0..{setup.model.kv_heads - 1} / 0..1")
        if not 0 <= port < self.config.read_ports:
            raise ValueError(f"read: port {port} outside 0..{self.config.read_ports - 1}")
        self.flush()
        what = f"READ of sequence {seq}, layer {layer} (cache layer {hw}), head {head}, {'KV'[kv]}, port {port}"
        expected = [e.pos for e in self._rings[(seq, setup.layer_class[hw])].read_order()]
        per_vector = setup.head_dim // self.config.dequant_lanes
        with self._doing(what):
            self._issue(Op.READ, seq=seq, layer=hw, head=head, kv=kv, port=port)
            beats = self._receive(what, port, len(expected) * per_vector)
            self._wait_commands(what)
        values, positions, error = self._decode(what, beats, expected, per_vector)
        if error:
            failed = self._moved("ddr_errors")
            self._account("ddr_errors", failed)
            raise DDRError(f"{what}: the DDR read failed (read_tag.error on its last beat, {failed} failed "
                           "run(s), STATUS.ddr_error)")
        return values, positions

    def _receive(self, what: str, port: int, n_beats: int) -> list[tuple[int, int, bool]]:
        if n_beats == 0:
            return []
        try:
            return self.io.receive_kv(port, n_beats)
        except TimeoutError as e:
            refused = self._moved("cmd_errors")
            if refused:
                self._account("cmd_errors", refused)
                raise CommandError(f"{what}: refused by the engine (STATUS.cmd_error)") from e
            raise KVCacheError(f"{what}: {e}") from e

    def _decode(self, what: str, beats, expected: list[int], per_vector: int):
        lanes = self.config.dequant_lanes
        problems = []
        tags = [layout.unpack(self._read_tag, tuser) for _, tuser, _ in beats]
        got = [tags[n * per_vector]["pos"] for n in range(len(expected))]
        if got != expected:
            problems.append(f"positions {got} where the ring model expects {expected}")
        if any(tags[n]["pos"] != got[n // per_vector] for n in range(len(beats))):
            problems.append("a vector's beats carry different positions")
        lasts = [n for n, (_, _, tlast) in enumerate(beats) if tlast]
        if beats and lasts != [len(beats) - 1]:
            problems.append(f"TLAST on beats {lasts}, expected only on beat {len(beats) - 1}")
        if problems:
            raise ReadMismatch(f"{what}: " + "; ".join(problems))
        raw = b"".join(tdata.to_bytes(2 * lanes, "little") for tdata, _, _ in beats)
        values = np.frombuffer(raw, "<u2").astype(np.uint16).view(self.dtype)
        values = values.reshape(len(expected), self.setup.head_dim)
        error = any(tag["error"] for tag in tags)
        return values, np.array(expected, dtype=np.int64), error

    def evict_upto(self, seq: int, position: int, *, layer: int | None = None, cls: int | None = None) -> None:
        """Drop the window tokens of one ring (named by ``layer`` or ``cls``) with position < ``position``."""
        self._check_seq(seq)
        k = self._class_of(layer=layer, cls=cls)
        if not 0 <= position < COUNT_MOD:
            raise ValueError(f"evict_upto: position {position} is not a 32-bit position")
        self.flush()  # the eviction must land after every append sent before it
        what = f"EVICT_UPTO {position} of sequence {seq}, class {k}"
        with self._doing(what):
            self._issue(Op.EVICT_UPTO, arg=position, seq=seq, cls=k)
            self._wait_commands(what)
        self._rings[(seq, k)].evict_upto(position)

    def reset_sequence(self, seq: int) -> None:
        """Empty every ring of a sequence (CLEAR); positions restart at 0."""
        self._check_seq(seq)
        self.flush()
        with self._doing(f"reset_sequence {seq}"):
            self._clear_sequence(seq)

    def soft_reset(self, settle: bool = True) -> None:
        """CTRL.soft_reset, wait for it to finish, then CLEAR every ring again (the engine forgets
        them; tables, scales and registers stay). ``settle``: first let the vectors already sent land
        (``flush``, whose errors raise), because a row whose write the reset cuts short is left
        undefined; ``settle=False`` resets at once (recovery from a stuck engine)."""
        if settle:
            self.flush()
        with self._doing("soft_reset"):
            self.regs.write_field("CTRL", "soft_reset", 1)
            self._poll("soft_reset", lambda: not self.regs.read_field("STATUS", "resetting"))
            self._restart_accounting()
            if self.setup is not None:
                self._clear_all_rings()

    # --- static formats -------------------------------------------------------------------------------
    def load_scales(self, scales: np.ndarray) -> None:
        """Load the scale cache of a static-scale build: ``scales`` float, ``[kv_layers, kv_heads, 2]``
        (per-head formats) or ``[kv_layers, kv_heads, 2, head_dim]`` (per-channel), index 2 = K, V."""
        setup = self._require_setup()
        f = self.config.format
        if not f.needs_scale_cache:
            raise ValueError(f"{f.name} carries its scales in its blocks: there is no scale cache to load")
        table = self.scale_table(scales)
        with self._doing("load_scales"):
            self.regs.write("STATUS", 1 << self.regs.field("STATUS", "bad_scale_index")["lsb"])
            self.regs.load_scales(0, [int(e) for e in table[: self._scale_entries_used(setup)]])
            if self.regs.read_field("STATUS", "bad_scale_index"):
                raise KVCacheError("load_scales: the scale cache refused an entry (STATUS.bad_scale_index)")

    def scale_table(self, scales: np.ndarray) -> np.ndarray:
        """The whole cache (uint32 entries) the driver loads for ``scales``."""
        setup = self._require_setup()
        f, c = self.config.format, self.config
        shape = (setup.kv_layers, setup.model.kv_heads, 2) + ((setup.head_dim,) if f.scope == "channel" else ())
        scales = np.asarray(scales, dtype=np.float64)
        if scales.shape != shape:
            raise ValueError(f"{f.name} takes scales of shape {shape}, got {scales.shape}")
        table = static.empty_table(f.name, c)
        for index in np.ndindex(*shape):
            layer, head, kv, *channel = index
            entry = static.make_entry(static.round_scale(scales[index], c.elem), c.elem)
            table[entry_index(f.scope, layer, head, kv, channel[0] if channel else 0, c)] = entry
        return table

    def _scale_entries_used(self, setup: Setup) -> int:
        """Entries up to the last layer's: layers are the most significant part of an entry's index."""
        c = self.config
        return int(entry_index(c.format.scope, setup.kv_layers - 1, c.max_kv_heads - 1, 1,
                               c.max_head_dim - 1, c)) + 1

    # --- inspection -----------------------------------------------------------------------------------
    def status(self) -> dict[str, int]:
        word = self.regs.read("STATUS")
        return {f["name"]: word >> f["lsb"] & ((1 << f["width"]) - 1)
                for f in self.regs.register("STATUS")["fields"]}

    def clear_status(self) -> None:
        self.regs.write("STATUS", self._sticky_mask())

    def counters(self) -> dict[str, int]:
        return {r["fields"][0]["port"]: self._counter(r["fields"][0]["port"])
                for r in self.regmap["registers"] if r["group"] == "counters" and r["part"] != "hi"}

    def region(self, seq: int, layer: int, head: int, kv: int) -> Region:
        self._check_seq(seq)
        return self.setup.regions[(seq, self._layer(layer), head, kv)]

    def region_image(self, seq: int, layer: int, head: int, kv: int) -> bytes:
        """The DDR bytes of a head's valid rows in attention order (what ``read`` dequantizes): for
        the ggml and MX formats a ``[n, head_dim]`` tensor gguf decodes as it is."""
        region = self.region(seq, layer, head, kv)
        self.flush()
        row = layout.row_bytes(self.config, self.setup.head_dim)
        order = self._rings[(seq, self.setup.layer_class[region.layer])].read_order()
        return b"".join(self.io.mem_read(region.base + e.slot * row, row) for e in order)

    def manifest(self) -> dict:
        """The layout and ring state as plain data (for a JSON dump next to a DDR image)."""
        setup = self._require_setup()
        f = self.config.format
        return {
            "format": f.name, "ggml_type": f.ggml_type, "elem": self.config.elem, "model": setup.model.name,
            "head_dim": setup.head_dim, "kv_heads": setup.model.kv_heads,
            "row_bytes": layout.row_bytes(self.config, setup.head_dim),
            "block_bytes": None if f.needs_scale_cache else f.block_bytes,
            "mem_base": self.io.mem_base, "mem_bytes": self.io.mem_bytes,
            "model_layers": {str(m): hw for m, hw in setup.hw_layer.items()},
            "classes": [{"class": c.index, "kv_max_tokens": c.ring.kv_max_tokens, "sinks": c.ring.n_sink,
                         "window": c.ring.n_window, "overflow": c.overflow, "layers": list(c.layers)}
                        for c in setup.classes],
            "regions": [{"seq": r.seq, "layer": r.layer, "head": r.head, "kv": "KV"[r.kv], "index": r.index,
                         "base": r.base, "slots": r.slots} for r in setup.regions.values()],
            "rings": [{"seq": seq, "class": cls, "appended": ring.appended,
                       "read_order": [[e.slot, e.pos] for e in ring.read_order()]}
                      for (seq, cls), ring in sorted(self._rings.items())],
        }
