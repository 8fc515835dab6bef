"""Model descriptions for the KV manager: which layers keep a KV cache, of what kind, and their sizes.

A model is a list of attention layers. Each is ``global`` (full attention) or ``local`` (sliding
window attention), and either owns its KV cache or reads the cache of an earlier layer (Gemma 3n's
KV sharing). Only KV-owning layers take memory and write bandwidth; every layer reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

GLOBAL, LOCAL = "global", "local"


@dataclass(frozen=True)
class LayerSpec:
    index: int
    attention: str  # GLOBAL or LOCAL
    kv_source: int  # the layer whose KV cache this layer reads; == index when it owns one

    @property
    def owns_kv(self) -> bool:
        return self.kv_source == self.index


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kv_heads: int
    head_dim: int
    layers: tuple[LayerSpec, ...]
    local_window: int | None = None  # tokens a local layer attends to (its own included)
    max_positions: int | None = None  # the model's trained context, for information

    def __post_init__(self):
        if self.kv_heads < 1 or self.head_dim < 1:
            raise ValueError(f"{self.name}: kv_heads and head_dim must be >= 1")
        for i, layer in enumerate(self.layers):
            if layer.index != i:
                raise ValueError(f"{self.name}: layer {i} is described as layer {layer.index}")
            if layer.attention not in (GLOBAL, LOCAL):
                raise ValueError(f"{self.name}: layer {i} attention must be {GLOBAL!r} or {LOCAL!r}")
            src = self.layers[layer.kv_source] if 0 <= layer.kv_source < len(self.layers) else None
            if src is None or not src.owns_kv or src.attention != layer.attention:
                raise ValueError(f"{self.name}: layer {i} reads KV of layer {layer.kv_source}, which is "
                                 f"not a KV-owning {layer.attention} layer")
        if any(la.attention == LOCAL for la in self.layers) and not self.local_window:
            raise ValueError(f"{self.name}: local layers need local_window")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def kv_layers(self) -> tuple[LayerSpec, ...]:
        """The layers that own a KV cache."""
        return tuple(la for la in self.layers if la.owns_kv)

    @property
    def elements_per_token(self) -> int:
        """K and V elements one token adds to one KV-owning layer."""
        return 2 * self.kv_heads * self.head_dim


def describe_model(name: str, *, n_layers: int, kv_heads: int, head_dim: int,
                   global_layers: Iterable[int] | Callable[[int], bool] | None = None,
                   local_window: int | None = None, kv_shared_layers: int = 0,
                   max_positions: int | None = None) -> ModelSpec:
    """Describe a model by its pattern.

    ``global_layers``: the indices of full-attention layers, or a predicate on the index; None means
    every layer is global. ``kv_shared_layers``: the last that many layers own no KV and read the
    cache of the last KV-owning layer of the same attention type before them (Gemma 3n's scheme).
    """
    if callable(global_layers):
        is_global = [bool(global_layers(i)) for i in range(n_layers)]
    elif global_layers is None:
        is_global = [True] * n_layers
    else:
        chosen = set(global_layers)
        is_global = [i in chosen for i in range(n_layers)]
    if not 0 <= kv_shared_layers < n_layers:
        raise ValueError(f"kv_shared_layers must be in [0, {n_layers}), got {kv_shared_layers}")
    first_shared = n_layers - kv_shared_layers
    layers = []
    for i in range(n_layers):
        kind = GLOBAL if is_global[i] else LOCAL
        source = i
        if i >= first_shared:
            owners = [j for j in range(first_shared) if is_global[j] == is_global[i]]
            if not owners:
                raise ValueError(f"layer {i} shares KV but no earlier {kind} layer owns one")
            source = owners[-1]
        layers.append(LayerSpec(i, kind, source))
    return ModelSpec(name, kv_heads, head_dim, tuple(layers), local_window, max_positions)


# transformers Gemma3nTextConfig defaults (see ../shared/reference/facts.md): layer i is global when
# (i + 1) % 5 == 0; the last 15 layers reuse layer 18's (local) or 19's (global) KV.
GEMMA_3N_E4B = describe_model(
    "gemma-3n-e4b", n_layers=35, kv_heads=2, head_dim=256,
    global_layers=lambda i: (i + 1) % 5 == 0, local_window=512, kv_shared_layers=15,
    max_positions=32768)

PRESETS = {m.name: m for m in (GEMMA_3N_E4B,)}


def get_preset(name: str) -> ModelSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}") from None
