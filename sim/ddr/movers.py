"""Stimulus the mover testbenches share: the RAM model's size and random commands that straddle
4 KiB pages (``tb_writer``, ``tb_reader``, ``tb_shared``)."""

from __future__ import annotations

import os
import random


RAM_BITS = 18  # the RAM model's size; commands sit at a random high base address (it wraps)


def n_commands(default: int) -> int:
    return int(os.environ.get("KVPATH_DDR_COMMANDS", default))


def random_command(rng: random.Random, size: int, lanes: int, max_len: int = 5000) -> tuple[int, int]:
    """(offset, length): a third short (up to 3 beats), most up to 640 bytes, a quarter long;
    about 30 % straddle a 4 KiB boundary."""
    kind = rng.random()
    if kind < 0.35:
        length = rng.randint(1, 3 * lanes)
    elif kind < 0.75:
        length = rng.randint(1, 640)
    else:
        length = rng.randint(600, max_len)
    if rng.random() < 0.3:
        page = rng.randrange(1, size // 4096)
        offset = page * 4096 - rng.randint(1, min(length, 4095))
    else:
        offset = rng.randrange(size - length)
    return max(0, min(offset, size - length)), length
