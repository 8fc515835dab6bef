"""Driver KV-manager throughput: tokens appended per second (each token appends to every KV-owning
layer's ring) on a model preset.

    kvpath bench driver --model gemma-3n-e4b --tokens 50000
"""

from __future__ import annotations

import argparse
import time

from kvpath.driver.ring_manager import KVManager


def bench_appends(model: str = "gemma-3n-e4b", tokens: int = 50000, kv_max_tokens: int = 32768,
                  fmt: str = "q8_0") -> dict:
    m = KVManager(model, kv_max_tokens=kv_max_tokens, ddr_bytes=1 << 40, k_format=fmt)
    seq = m.add_sequence()
    t0 = time.perf_counter()
    for _ in range(tokens):
        m.append(seq)
    dt = time.perf_counter() - t0
    layers = len(m.model.kv_layers)
    return {"model": m.model.name, "tokens": tokens, "seconds": dt, "tokens_per_s": tokens / dt,
            "ring_appends_per_s": tokens * layers / dt, "kv_layers": layers}


def main(argv=None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3n-e4b")
    ap.add_argument("--tokens", type=int, default=50000)
    ap.add_argument("--kv-max-tokens", type=int, default=32768)
    args = ap.parse_args(argv)
    r = bench_appends(args.model, args.tokens, args.kv_max_tokens)
    print(f"model={r['model']} tokens={r['tokens']} kv_layers={r['kv_layers']} "
          f"seconds={r['seconds']:.3f} tokens_per_s={r['tokens_per_s']:.0f} "
          f"ring_appends_per_s={r['ring_appends_per_s']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
