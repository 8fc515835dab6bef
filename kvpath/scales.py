"""Where each static scale lives in the scale constant cache: the one definition of an entry's index.

The golden model, the RTL generator (``kvpath.hdl.static.cache``) and the driver
(``kvpath.driver.calibrate``) all address entries through this module.

Index (``kv`` is 0 for K, 1 for V):

* per-head formats (``scope == "head"``): ``((layer * max_kv_heads + head) * 2 + kv)``
* per-channel formats (``scope == "channel"``): that ``* max_head_dim + channel``

An entry is 32 bits: the scale in the low half and its reciprocal in the high half, both 16-bit floats
of the stream's element type (FP16 or BF16). ``kvpath.golden.static.make_entry`` computes the pair
from a scale exactly as the driver must.
"""

from __future__ import annotations

import numpy as np

from kvpath.config import DEFAULT, KVPathConfig, get_format

SCOPES = ("head", "channel")


def scope_of(fmt: str) -> str:
    f = get_format(fmt)
    if f.family != "static":
        raise ValueError(f"{f.name} is not a static-scale format (no scale cache entries)")
    return f.scope


def group_count(config: KVPathConfig = DEFAULT) -> int:
    """(layer, head, K/V) groups: one per-head entry each, ``max_head_dim`` per-channel entries each."""
    return config.max_layers * config.max_kv_heads * 2


def entry_count(scope: str, config: KVPathConfig = DEFAULT) -> int:
    """Entries the cache holds; Gemma 3n E4B per-channel (20 x 2 x 2 x 256) is 20,480."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scale scope {scope!r}; choose one of {', '.join(SCOPES)}")
    return group_count(config) * (config.max_head_dim if scope == "channel" else 1)


def context_ok(layer, head, kv, channel, scope: str, config: KVPathConfig = DEFAULT):
    """True where (layer, head, kv[, channel]) addresses an entry (vectorized, no exception)."""
    layer, head, kv, channel = (np.asarray(v, np.int64) for v in (layer, head, kv, channel))
    ok = (layer >= 0) & (layer < config.max_layers) & (head >= 0) & (head < config.max_kv_heads)
    ok &= (kv == 0) | (kv == 1)
    if scope == "channel":
        ok &= (channel >= 0) & (channel < config.max_head_dim)
    return ok


def entry_index(scope: str, layer, head, kv, channel=0, config: KVPathConfig = DEFAULT):
    """Entry index (int64, vectorized); ValueError for a context outside the configuration."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scale scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if not np.all(context_ok(layer, head, kv, channel, scope, config)):
        raise ValueError(f"(layer, head, kv, channel) outside max_layers={config.max_layers}, "
                         f"max_kv_heads={config.max_kv_heads}, kv in (0, 1), "
                         f"max_head_dim={config.max_head_dim}")
    layer, head, kv, channel = (np.asarray(v, np.int64) for v in (layer, head, kv, channel))
    group = (layer * config.max_kv_heads + head) * 2 + kv
    return group * config.max_head_dim + channel if scope == "channel" else group


def pack_entry(scale_bits, inv_bits):
    """32-bit entry (uint32) from the scale's and the reciprocal's 16-bit patterns."""
    return (np.asarray(inv_bits, np.uint32) << 16) | np.asarray(scale_bits, np.uint32)


def unpack_entry(entries):
    """``(scale_bits, inv_bits)`` uint16 arrays of 32-bit entries."""
    e = np.asarray(entries, np.uint32)
    return (e & 0xFFFF).astype(np.uint16), (e >> 16).astype(np.uint16)
