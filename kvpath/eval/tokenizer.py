"""The model's tokenizer, rebuilt from the GGUF metadata with ``tokenizers``.

``tokenizer.ggml.model`` is ``gpt2`` (byte-level BPE over ``tokenizer.ggml.tokens`` and ``.merges``) and
``tokenizer.ggml.pre`` is ``smollm``: llama.cpp splits every digit on its own before the GPT-2
pre-tokenizer regex, which is ``Digits(individual_digits=True)`` followed by ``ByteLevel`` here. No BOS
is added (``tokenizer.ggml.add_bos_token`` is false). Control tokens (``<|im_start|>`` ...) are
registered as special tokens so they are matched whole.
"""

from __future__ import annotations

import functools

CONTROL = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL in tokenizer.ggml.token_type


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise RuntimeError("the eval tokenizer needs the Python package `tokenizers` (requirements.lock; "
                           "run scripts/bootstrap.sh)") from e
    return tokenizers


class Tokenizer:
    def __init__(self, reader):
        tk = _tokenizers()
        f = reader.fields

        def contents(key):
            if key not in f:
                raise ValueError(f"GGUF metadata {key} missing: cannot build the tokenizer")
            return f[key].contents()

        model, pre = contents("tokenizer.ggml.model"), contents("tokenizer.ggml.pre")
        if model != "gpt2" or pre != "smollm":
            raise ValueError(f"tokenizer {model}/{pre} is not supported (expected gpt2/smollm)")
        tokens = contents("tokenizer.ggml.tokens")
        merges = [tuple(m.split(" ", 1)) for m in contents("tokenizer.ggml.merges")]
        types = contents("tokenizer.ggml.token_type")
        self.add_bos = bool(contents("tokenizer.ggml.add_bos_token")) if "tokenizer.ggml.add_bos_token" in f else False
        self.bos_id = int(contents("tokenizer.ggml.bos_token_id"))
        bpe = tk.models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
        inner = tk.Tokenizer(bpe)
        inner.pre_tokenizer = tk.pre_tokenizers.Sequence([
            tk.pre_tokenizers.Digits(individual_digits=True),
            tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
        inner.decoder = tk.decoders.ByteLevel()
        inner.add_special_tokens([tk.AddedToken(tokens[i], special=True, normalized=False)
                                  for i, t in enumerate(types) if t == CONTROL])
        self.inner = inner
        self.vocab_size = len(tokens)

    def encode(self, text: str) -> list[int]:
        ids = self.inner.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if self.add_bos else ids

    def pieces(self, text: str) -> list[str]:
        """The decoded text of each token (for inspection and tests)."""
        return [self.inner.decode([i], skip_special_tokens=False) for i in self.encode(text)]

    def decode(self, ids) -> str:
        return self.inner.decode(list(ids))


@functools.lru_cache(maxsize=2)
def load(path=None) -> Tokenizer:
    from kvpath.eval import model

    return Tokenizer(model.load(path).reader)
