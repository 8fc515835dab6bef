"""A decode workload shaped like Gemma 3n E4B, driven through ``KVCache``: what ``kvpath demo`` runs.

Shape (``../shared/reference/facts.md``): 2 KV heads of head_dim 256 per layer; layer i is global
when (i + 1) % 5 == 0, else local (sliding window). The demo keeps the first ``layers`` KV layers
and a short context so it finishes in minutes in simulation; the local layers keep ``sinks``
attention sinks plus a ``window`` of recent tokens, so their rings wrap and evict many times.

K/V are synthetic, seeded: values N(0, 1), and in every (layer, head) a few key channels scaled
by ``outlier_scale`` (the outlier channels real keys have, which make block formats lose the small
channels of a block that holds an outlier).

Every ``read_every`` tokens (and after the last) every (layer, head, K|V) is read back. Each read
is compared bit for bit with the ``reference`` cache (another backend: the engine model), and
attention over the read-back K and V is compared with attention over the FP16 inputs at the same
positions (one random query per layer, head and read): cosine similarity and relative error. At
the end every region's valid rows are compared byte for byte with the reference's, and decoded by
``gguf`` (ggml and MXFP4 formats), whose values must equal what the read path returned.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from kvpath import layout
from kvpath.driver.kv_policy import LayerPolicy
from kvpath.driver.presets import GLOBAL, LOCAL, describe_model
from kvpath.elements import stream_element


@dataclass(frozen=True)
class Workload:
    tokens: int = 96
    layers: int = 5           # KV layers, from layer 0: 4 local, then 1 global
    kv_heads: int = 2
    head_dim: int = 256
    sinks: int = 4
    window: int = 28
    read_every: int = 32
    outlier_channels: int = 4
    outlier_scale: float = 24.0
    seed: int = 1

    def __post_init__(self):
        for name in ("tokens", "layers", "kv_heads", "head_dim", "window", "read_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"workload {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.outlier_channels <= self.head_dim:
            raise ValueError(f"outlier_channels must be in 0..head_dim, got {self.outlier_channels}")

    def model(self):
        return describe_model("gemma-3n-e4b-shaped", n_layers=self.layers, kv_heads=self.kv_heads,
                              head_dim=self.head_dim, global_layers=lambda i: (i + 1) % 5 == 0,
                              local_window=self.window)

    def policies(self) -> dict[str, LayerPolicy]:
        return {GLOBAL: LayerPolicy.full(), LOCAL: LayerPolicy.sink_window(self.sinks, self.window)}

    def configure(self, cache) -> None:
        """Program a cache for this workload: the global layers keep every token of the run (and the
        cap leaves the local layers their sinks and window even in a short run)."""
        cache.configure(self.model(), policies=self.policies(),
                        kv_max_tokens=max(self.tokens, self.sinks + self.window))


@dataclass
class Report:
    workload: dict
    format: str
    elem: str
    tokens: int = 0
    reads: int = 0
    vectors_read: int = 0
    read_mismatches: int = 0          # elements or positions differing from the reference backend
    region_mismatches: int = 0        # region bytes differing from the reference backend
    gguf_mismatches: int = 0          # read values differing from gguf's decode of the region
    gguf_checked: int = 0             # elements checked against gguf
    attention_cosine_min: float = 1.0
    attention_cosine_mean: float = 1.0
    attention_rel_err_max: float = 0.0
    attention_rel_err_mean: float = 0.0
    fp16_bytes_written: int = 0       # what the same vectors cost unquantized
    fp16_bytes_read: int = 0
    counters: dict = field(default_factory=dict)
    wall_s: float = 0.0
    per_read: list = field(default_factory=list)   # (token, layer, head, n, cosine, rel_err)

    @property
    def mismatches(self) -> int:
        return self.read_mismatches + self.region_mismatches + self.gguf_mismatches

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mismatches"] = self.mismatches
        return d


class Inputs:
    """The seeded K/V stream, with the FP16 history needed to score attention."""

    def __init__(self, w: Workload, dtype):
        self.w, self.dtype = w, dtype
        self.rng = np.random.default_rng(w.seed)
        shape = (w.layers, w.kv_heads, w.head_dim)
        self.key_scale = np.ones(shape)
        for layer in range(w.layers):
            for head in range(w.kv_heads):
                channels = self.rng.choice(w.head_dim, w.outlier_channels, replace=False)
                self.key_scale[layer, head, channels] = w.outlier_scale
        self.history: list[tuple[np.ndarray, np.ndarray]] = []

    def token(self) -> tuple[np.ndarray, np.ndarray]:
        shape = self.key_scale.shape
        k = (self.rng.standard_normal(shape) * self.key_scale).astype(self.dtype)
        v = self.rng.standard_normal(shape).astype(self.dtype)
        self.history.append((k, v))
        return k, v

    def original(self, layer: int, head: int, kv: int, positions) -> np.ndarray:
        return np.stack([self.history[p][kv][layer, head] for p in positions]) if len(positions) else \
            np.zeros((0, self.w.head_dim), self.dtype)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    s = k.astype(np.float64) @ q / np.sqrt(len(q))
    p = np.exp(s - s.max())
    return (p / p.sum()) @ v.astype(np.float64)


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint16)


def _gguf_values(fmt: str, elem: str, image: bytes, n: int, head_dim: int):
    """gguf's decode of ``n`` rows, rounded to the element type the way the read path defines it
    (kvpath.golden.oracle: sanitized header fields, saturation); None where gguf has no such format."""
    from kvpath.config import get_format
    from kvpath.golden import oracle
    from kvpath.golden.oracle import gguf as gguf_oracle
    f = get_format(fmt)
    if f.needs_scale_cache or oracle.library(fmt) != "gguf" or elem != "fp16":
        return None
    blocks = np.frombuffer(image, np.uint8).reshape(-1, f.block_bytes)
    if f.family == "mx":
        values = oracle.dequantize(blocks, fmt)[0].view(np.float16)
    else:
        values = gguf_oracle.gguf_dequantize(blocks, fmt)[0]
    return values.reshape(n, head_dim)


def run(cache, w: Workload, *, reference=None, progress=None, dump_dir=None) -> Report:
    """Decode ``w.tokens`` tokens through ``cache`` (and ``reference``, if given, in step);
    ``dump_dir``: write the regions, inputs and manifest there at the end (``dump``)."""
    t0 = time.perf_counter()
    c = cache.config
    report = Report(asdict(w), c.fmt, c.elem)
    caches = [cache] + ([reference] if reference is not None else [])
    for x in caches:
        w.configure(x)
    inputs = Inputs(w, stream_element(c.elem).dtype)
    qrng = np.random.default_rng(w.seed + 1)
    cosines, rel_errs = [], []
    row = layout.row_bytes(c, w.head_dim)
    last_read = {}
    for t in range(w.tokens):
        k, v = inputs.token()
        for x in caches:
            x.append(0, k, v)
        report.tokens += 1
        report.fp16_bytes_written += 2 * k.size * k.itemsize
        if (t + 1) % w.read_every and t != w.tokens - 1:
            if progress:
                progress(t + 1, w.tokens, report)
            continue
        for layer in range(w.layers):
            for head in range(w.kv_heads):
                got = []
                for kv in (0, 1):
                    values, positions = cache.read(0, layer, head, kv)
                    report.reads += 1
                    report.vectors_read += len(positions)
                    report.fp16_bytes_read += values.size * values.itemsize
                    if reference is not None:
                        ref_values, ref_positions = reference.read(0, layer, head, kv)
                        report.read_mismatches += int(np.count_nonzero(_bits(values) != _bits(ref_values))) \
                            if values.shape == ref_values.shape else values.size + ref_values.size
                        report.read_mismatches += int(not np.array_equal(positions, ref_positions))
                    last_read[(layer, head, kv)] = values
                    got.append((values, positions))
                (kq, pos), (vq, _) = got
                q = qrng.standard_normal(w.head_dim)
                exact = attention(q, inputs.original(layer, head, 0, pos), inputs.original(layer, head, 1, pos))
                approx = attention(q, kq, vq)
                cos = float(exact @ approx / (np.linalg.norm(exact) * np.linalg.norm(approx) + 1e-300))
                rel = float(np.linalg.norm(approx - exact) / (np.linalg.norm(exact) + 1e-300))
                cosines.append(cos)
                rel_errs.append(rel)
                report.per_read.append((t + 1, layer, head, len(pos), cos, rel))
        if progress:
            progress(t + 1, w.tokens, report)
    for layer in range(w.layers):
        for head in range(w.kv_heads):
            for kv in (0, 1):
                image = cache.region_image(0, layer, head, kv)
                if reference is not None:
                    ref = reference.region_image(0, layer, head, kv)
                    report.region_mismatches += sum(a != b for a, b in zip(image, ref)) + abs(len(image) - len(ref))
                values = last_read[(layer, head, kv)]
                decoded = _gguf_values(c.fmt, c.elem, image, len(image) // row, w.head_dim)
                if decoded is not None:
                    report.gguf_checked += decoded.size
                    report.gguf_mismatches += int(np.count_nonzero(_bits(decoded) != _bits(values))) \
                        if decoded.shape == values.shape else decoded.size + values.size
    if dump_dir is not None:
        dump(cache, inputs, dump_dir)
    report.counters = cache.counters()
    report.attention_cosine_min = float(min(cosines))
    report.attention_cosine_mean = float(np.mean(cosines))
    report.attention_rel_err_max = float(max(rel_errs))
    report.attention_rel_err_mean = float(np.mean(rel_errs))
    report.wall_s = time.perf_counter() - t0
    return report


def dump(cache, inputs: Inputs, out) -> None:
    """Per region: the raw DDR image of all its slots (``<name>.bin``), the FP16 (or BF16) inputs of
    its valid tokens in position order (``<name>.npy``), and ``manifest.json``: the layout plus, per
    region, each valid slot with the position it holds, in read order. With only these files and
    gguf, anyone can decode the image (rows ``slot * row_bytes``) and compare it with the inputs."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    setup = cache.setup
    manifest = cache.manifest()
    row = manifest["row_bytes"]
    regions = []
    for layer in range(setup.kv_layers):
        for head in range(setup.model.kv_heads):
            for kv in (0, 1):
                r = cache.region(0, layer, head, kv)
                name = f"seq0_layer{layer}_head{head}_{'kv'[kv]}"
                cache.flush()
                (out / f"{name}.bin").write_bytes(cache.io.mem_read(r.base, r.slots * row))
                order = cache.ring(0, layer=layer).read_order()
                positions = sorted(e.pos for e in order)
                np.save(out / f"{name}.npy", inputs.original(layer, head, kv, positions))
                regions.append({"file": f"{name}.bin", "inputs": f"{name}.npy", "layer": layer, "head": head,
                                "kv": "KV"[kv], "base": r.base, "slots": r.slots,
                                "valid": [{"slot": e.slot, "pos": e.pos} for e in order]})
    manifest["dump"] = regions
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
