"""The driver's KV manager: per-sequence, per-layer ring state, policies, budget and traffic.

The hardware tracks validity; the driver decides the policy. For every KV-owning layer of every
sequence the manager keeps the ring's state with the golden model (``kvpath.golden.ring``), which
the RTL tracker is proven and simulated against, so what the driver believes is valid is what the
tracker reports.

Example (Gemma 3n E4B, q8_0 K and V, 32 K context, 256 MiB region)::

    m = KVManager("gemma-3n-e4b", kv_max_tokens=32768, ddr_bytes=256 << 20, k_format="q8_0")
    s = m.add_sequence()
    writes = m.append(s)           # {layer: AppendResult(slot, pos, evicted)} per KV-owning layer
    m.read_order(s, 24)            # layer 24 reads layer 19's ring
    m.traffic(s)                   # bytes per token written and per attention step read
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvpath.driver.kv_budget import (KV_FORMATS, MemoryBudgetError, MemoryPlan, bytes_needed,
                                     plan_memory, token_bytes)
from kvpath.driver.kv_policy import ERROR, FULL, LayerPolicy
from kvpath.driver.presets import GLOBAL, LOCAL, ModelSpec, get_preset
from kvpath.golden.ring import (GENERATED_MAX_TOKENS, AppendResult, Evicted, ReadEntry, RingConfig,
                                RingModel)

# The tracker's position counter is 32 bits wide (hdl/ring/tracker.py default) and holds one value back.
POS_LIMIT = 2 ** 32 - 1


class KVOverflowError(RuntimeError):
    """An append would evict from a layer whose overflow policy is ``error``; nothing was written."""


@dataclass(frozen=True)
class Setup:
    """Everything validated together; the manager swaps a whole Setup or nothing."""

    kv_max_tokens: int
    ddr_bytes: int
    k_format: str
    v_format: str
    max_sequences: int
    hw_max_tokens: int
    policies: dict[int, LayerPolicy]  # per KV-owning layer
    rings: dict[int, RingConfig]
    plan: MemoryPlan


@dataclass(frozen=True)
class Traffic:
    k_format: str
    v_format: str
    write_bytes_per_token: int  # one appended token, all KV-owning layers, K and V, all heads
    read_bytes_per_step: int  # every layer attending once over the valid tokens of its ring
    read_bytes_per_layer: dict[int, int] = field(default_factory=dict)


@dataclass
class _Sequence:
    index: int  # which of the max_sequences memory regions it uses
    rings: dict[int, RingModel]


def _fmt(n: int) -> str:
    return f"{n:,}"


class KVManager:
    def __init__(self, model: ModelSpec | str, *, kv_max_tokens: int, ddr_bytes: int,
                 k_format: str = "q8_0", v_format: str | None = None, max_sequences: int = 1,
                 policies: dict[str, LayerPolicy] | None = None,
                 layer_policies: dict[int, LayerPolicy] | None = None,
                 hw_max_tokens: int = GENERATED_MAX_TOKENS):
        """``policies`` by attention type (``global`` / ``local``; default: full context for global
        layers, a sliding window of the model's ``local_window`` for local ones); ``layer_policies``
        override single KV-owning layers. Raises ValueError (MemoryBudgetError when it does not fit)
        with the numbers."""
        self.model = get_preset(model) if isinstance(model, str) else model
        self._policies_by_type = dict(policies or {})
        self._layer_policies = dict(layer_policies or {})
        self._seqs: dict[Any, _Sequence] = {}
        self.setup = self._validate(kv_max_tokens, ddr_bytes, k_format, v_format or k_format,
                                    max_sequences, hw_max_tokens, self._policies_by_type,
                                    self._layer_policies)

    # -- configuration ----------------------------------------------------------------------------
    def _policy_for(self, layer: int, by_type: dict[str, LayerPolicy],
                    by_layer: dict[int, LayerPolicy]) -> LayerPolicy:
        if layer in by_layer:
            return by_layer[layer]
        kind = self.model.layers[layer].attention
        if kind in by_type:
            return by_type[kind]
        return LayerPolicy.full() if kind == GLOBAL else LayerPolicy.sliding(self.model.local_window)

    def _validate(self, kv_max_tokens, ddr_bytes, k_format, v_format, max_sequences, hw_max_tokens,
                  by_type, by_layer) -> Setup:
        model = self.model
        for k in by_type:
            if k not in (GLOBAL, LOCAL):
                raise ValueError(f"policies are keyed by {GLOBAL!r} or {LOCAL!r}, got {k!r}")
        for layer in by_layer:
            if not (0 <= layer < model.n_layers and model.layers[layer].owns_kv):
                raise ValueError(f"layer {layer} of {model.name} owns no KV cache; set the policy of "
                                 f"the layer it reads instead")
        for f in (k_format, v_format):
            if f not in KV_FORMATS:
                raise ValueError(f"unknown KV format {f!r}; choose one of {', '.join(KV_FORMATS)}")
        if max_sequences < 1:
            raise ValueError(f"max_sequences must be >= 1, got {max_sequences}")
        if not 1 <= kv_max_tokens <= hw_max_tokens:
            raise ValueError(f"KV_MAX_TOKENS={kv_max_tokens} must be in [1, {hw_max_tokens}] "
                             f"(the generated maximum)")
        policies, rings = {}, {}
        for layer in model.kv_layers:
            p = self._policy_for(layer.index, by_type, by_layer)
            try:
                rings[layer.index] = p.ring_config(kv_max_tokens).check(hw_max_tokens)
            except ValueError as e:
                raise ValueError(f"layer {layer.index} ({p.describe()}): {e}") from None
            policies[layer.index] = p
        slots = {la: r.kv_max_tokens for la, r in rings.items()}
        need = bytes_needed(model, slots, k_format, v_format, max_sequences)
        if need > ddr_bytes:
            raise MemoryBudgetError(self._budget_message(kv_max_tokens, ddr_bytes, k_format, v_format,
                                                         max_sequences, hw_max_tokens, policies, slots,
                                                         need))
        plan = plan_memory(model, slots, k_format, v_format, max_sequences)
        return Setup(kv_max_tokens, ddr_bytes, k_format, v_format, max_sequences, hw_max_tokens,
                     policies, rings, plan)

    def _budget_message(self, cap, ddr_bytes, k_format, v_format, n_seq, hw_max, policies, slots, need):
        model = self.model
        full = [la for la, p in policies.items() if p.kind == FULL]
        fixed = sum(s for la, s in slots.items() if la not in full)
        per_fmt = "; ".join(f"{f} {_fmt(bytes_needed(model, slots, f, f, n_seq))}" for f in KV_FORMATS)
        tb = token_bytes(model, k_format, v_format) * n_seq
        room = ddr_bytes // tb - fixed  # slots left for the full-context layers
        if full:
            fit = min(room // len(full), hw_max) if room > 0 else 0
            fit_text = (f"largest KV_MAX_TOKENS that fits with K {k_format} / V {v_format}: {fit}"
                        if fit > 0 else "no KV_MAX_TOKENS fits with these formats")
        else:
            fit_text = "no layer keeps full context, so lowering KV_MAX_TOKENS does not help"
        return (f"KV cache does not fit: {model.name} with KV_MAX_TOKENS={cap}, {len(full)} full-context "
                f"layers x {cap} slots + {_fmt(fixed)} slots in the other {len(slots) - len(full)} "
                f"KV layers, {model.kv_heads} KV heads x head_dim {model.head_dim}, {n_seq} sequence(s), "
                f"K {k_format} / V {v_format} needs {_fmt(need)} bytes; the DDR region holds "
                f"{_fmt(ddr_bytes)} bytes. Needed per format (K and V alike): {per_fmt}. {fit_text}.")

    def reconfigure(self, **changes) -> None:
        """Change any of kv_max_tokens, ddr_bytes, k_format, v_format, max_sequences, policies,
        layer_policies, hw_max_tokens. Everything is validated first; on error nothing changes.
        On success every sequence starts over (its rings are cleared), as the tracker's CLEAR does."""
        allowed = {"kv_max_tokens", "ddr_bytes", "k_format", "v_format", "max_sequences", "policies",
                   "layer_policies", "hw_max_tokens"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"cannot reconfigure {', '.join(sorted(unknown))}")
        s = self.setup
        by_type = dict(changes.get("policies", self._policies_by_type) or {})
        by_layer = dict(changes.get("layer_policies", self._layer_policies) or {})
        n_seq = changes.get("max_sequences", s.max_sequences)
        if n_seq < len(self._seqs):
            raise ValueError(f"max_sequences={n_seq} but {len(self._seqs)} sequences are open")
        new = self._validate(changes.get("kv_max_tokens", s.kv_max_tokens),
                             changes.get("ddr_bytes", s.ddr_bytes),
                             changes.get("k_format", s.k_format),
                             changes.get("v_format", s.v_format),
                             n_seq, changes.get("hw_max_tokens", s.hw_max_tokens), by_type, by_layer)
        self.setup, self._policies_by_type, self._layer_policies = new, by_type, by_layer
        for k, seq in enumerate(self._seqs.values()):
            seq.index = k
            seq.rings = self._new_rings()

    def policy(self, layer: int) -> LayerPolicy:
        return self.setup.policies[self._owner(layer)]

    # -- sequences --------------------------------------------------------------------------------
    def _new_rings(self) -> dict[int, RingModel]:
        s = self.setup
        return {la: RingModel(r.kv_max_tokens, r.n_sink, r.n_window, max_tokens=s.hw_max_tokens,
                              pos_limit=POS_LIMIT) for la, r in s.rings.items()}

    def add_sequence(self, seq_id: Any = None) -> Any:
        if len(self._seqs) >= self.setup.max_sequences:
            raise ValueError(f"all {self.setup.max_sequences} sequence regions are in use")
        if seq_id is None:
            seq_id = next(i for i in range(len(self._seqs) + 1) if i not in self._seqs)
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id!r} already exists")
        used = {s.index for s in self._seqs.values()}
        index = next(i for i in range(self.setup.max_sequences) if i not in used)
        self._seqs[seq_id] = _Sequence(index, self._new_rings())
        return seq_id

    def remove_sequence(self, seq_id: Any) -> None:
        self._seq(seq_id)
        del self._seqs[seq_id]

    def reset(self, seq_id: Any) -> None:
        self._seq(seq_id).rings = self._new_rings()

    @property
    def sequences(self) -> list:
        return list(self._seqs)

    def _seq(self, seq_id: Any) -> _Sequence:
        try:
            return self._seqs[seq_id]
        except KeyError:
            raise KeyError(f"no sequence {seq_id!r}") from None

    def _owner(self, layer: int) -> int:
        if not 0 <= layer < self.model.n_layers:
            raise IndexError(f"{self.model.name} has layers 0..{self.model.n_layers - 1}, not {layer}")
        return self.model.layers[layer].kv_source

    # -- operations -------------------------------------------------------------------------------
    def append(self, seq_id: Any, token: Any = None) -> dict[int, AppendResult]:
        """Append the next token to every KV-owning layer; returns each layer's slot and eviction."""
        rings = self._seq(seq_id).rings
        blocked = [la for la, r in rings.items()
                   if self.setup.policies[la].overflow == ERROR and r.would_evict()]
        if blocked:
            first = rings[blocked[0]]
            raise KVOverflowError(
                f"sequence {seq_id!r}: appending position {first.appended} would evict from layer(s) "
                f"{blocked} (policy overflow=error, {first.n_valid} of {first.capacity} slots valid); "
                f"nothing was written")
        return {la: r.append(token) for la, r in rings.items()}

    def evict_upto(self, seq_id: Any, position: int, layers=None) -> dict[int, list[Evicted]]:
        """Evict window tokens with position < ``position`` in ``layers`` (default: every KV-owning
        layer). Sinks stay."""
        rings = self._seq(seq_id).rings
        targets = list(rings) if layers is None else list(layers)
        for la in targets:
            if la not in rings:
                raise ValueError(f"layer {la} owns no KV cache (it reads layer {self._owner(la)})")
        return {la: rings[la].evict_upto(position) for la in targets}

    # -- inspection -------------------------------------------------------------------------------
    def ring(self, seq_id: Any, layer: int) -> RingModel:
        """The ring ``layer`` reads (its own, or its KV source's). Treat as read-only."""
        return self._seq(seq_id).rings[self._owner(layer)]

    def position(self, seq_id: Any) -> int:
        """Original position of the next token."""
        return next(iter(self._seq(seq_id).rings.values())).appended

    def valid(self, seq_id: Any, layer: int) -> dict[int, int]:
        """slot -> original position of every valid slot ``layer`` attends to."""
        return self.ring(seq_id, layer).valid_slots()

    def n_valid(self, seq_id: Any, layer: int) -> int:
        return self.ring(seq_id, layer).n_valid

    def read_order(self, seq_id: Any, layer: int) -> list[ReadEntry]:
        return self.ring(seq_id, layer).read_order()

    def slot_address(self, seq_id: Any, layer: int, kv: int, head: int, slot: int) -> int:
        """Byte offset in the DDR region of one head vector (``kv`` 0 = K, 1 = V)."""
        return self.setup.plan.address(self._seq(seq_id).index, self._owner(layer), kv, head, slot)

    def traffic(self, seq_id: Any, k_format: str | None = None, v_format: str | None = None) -> Traffic:
        """Bytes per token written and per attention step read, for the current state; formats
        default to the configured ones."""
        kf = k_format or self.setup.k_format
        vf = v_format or (k_format if k_format else self.setup.v_format)
        tb = token_bytes(self.model, kf, vf)
        per_layer = {la.index: self.n_valid(seq_id, la.index) * tb for la in self.model.layers}
        return Traffic(kf, vf, tb * len(self.model.kv_layers), sum(per_layer.values()), per_layer)

    def traffic_by_format(self, seq_id: Any) -> dict[str, Traffic]:
        """The same state's traffic with K and V both in each format."""
        return {f: self.traffic(seq_id, f, f) for f in KV_FORMATS}

    def bytes_by_format(self) -> dict[str, int]:
        """Memory all sequences' rings need in each format (K and V alike), for this configuration."""
        slots = {la: r.kv_max_tokens for la, r in self.setup.rings.items()}
        return {f: bytes_needed(self.model, slots, f, f, self.setup.max_sequences) for f in KV_FORMATS}

    def summary(self, seq_id: Any) -> list[str]:
        out = []
        for la in self.model.kv_layers:
            r = self.ring(seq_id, la.index)
            readers = [x.index for x in self.model.layers if x.kv_source == la.index]
            out.append(f"layer {la.index:2d} {la.attention:6s} {self.setup.policies[la.index].describe()}: "
                       f"{r.n_valid}/{r.capacity} valid, read by {readers}")
        return out
