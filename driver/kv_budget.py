"""Bytes of KV cache per format, the DDR layout of the rings, and the budget check.

Layout of the region: sequence, then KV-owning layer, then K before V, then KV head; each (sequence,
layer, K|V, head) is one ring of ``C`` slots of one head vector each. So the slot the tracker
announces is all the write path needs to form an address.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvpath.config import BLOCK_ELEMS, FORMATS, get_format
from kvpath.driver.presets import ModelSpec

FP16 = "fp16"
KV_FORMATS = (FP16, *FORMATS)


class MemoryBudgetError(ValueError):
    """The configured KV cache does not fit in the DDR region it was given."""


def vector_bytes(fmt: str, head_dim: int) -> int:
    """Bytes of one head vector (one token, one head, K or V) in ``fmt``."""
    if fmt == FP16:
        return 2 * head_dim
    f = get_format(fmt)
    if head_dim % BLOCK_ELEMS:
        raise ValueError(f"head_dim {head_dim} is not a multiple of the {BLOCK_ELEMS}-element block of {fmt}")
    return head_dim // BLOCK_ELEMS * f.block_bytes


def token_bytes(model: ModelSpec, k_format: str, v_format: str) -> int:
    """Bytes one token occupies in one KV-owning layer: K and V, every KV head."""
    return model.kv_heads * (vector_bytes(k_format, model.head_dim) + vector_bytes(v_format, model.head_dim))


@dataclass(frozen=True)
class Region:
    offset: int  # from the start of the DDR region
    slots: int
    slot_bytes: int  # one head vector


@dataclass(frozen=True)
class MemoryPlan:
    """Where every ring lives. ``rings[(seq_index, layer, kv, head)]`` with ``kv`` 0 = K, 1 = V."""

    total_bytes: int
    rings: dict[tuple[int, int, int, int], Region]

    def address(self, seq_index: int, layer: int, kv: int, head: int, slot: int) -> int:
        region = self.rings[(seq_index, layer, kv, head)]
        if not 0 <= slot < region.slots:
            raise IndexError(f"slot {slot} outside the ring of {region.slots}")
        return region.offset + slot * region.slot_bytes


def plan_memory(model: ModelSpec, slots_per_layer: dict[int, int], k_format: str, v_format: str,
                max_sequences: int) -> MemoryPlan:
    vec = (vector_bytes(k_format, model.head_dim), vector_bytes(v_format, model.head_dim))
    rings, offset = {}, 0
    for seq in range(max_sequences):
        for layer in model.kv_layers:
            slots = slots_per_layer[layer.index]
            for kv in (0, 1):
                for head in range(model.kv_heads):
                    rings[(seq, layer.index, kv, head)] = Region(offset, slots, vec[kv])
                    offset += slots * vec[kv]
    return MemoryPlan(offset, rings)


def bytes_needed(model: ModelSpec, slots_per_layer: dict[int, int], k_format: str, v_format: str,
                 max_sequences: int) -> int:
    return max_sequences * token_bytes(model, k_format, v_format) * sum(
        slots_per_layer[la.index] for la in model.kv_layers)
