"""The board backend plugged into the repository's own driver: program() on a fake board, then
``Registers.check_bitstream`` over a fake UIO device whose file holds the ID, VERSION and
configuration words of one build. Plumbing only: the words are written by the test, not by RTL."""

import pytest

from kvpath.boards.kv260.program import program
from kvpath.config import KVPathConfig
from kvpath.driver import board as transport
from kvpath.driver.regs import BitstreamMismatch, Registers
from kvpath.regmap import build_map
from kvpath.regmap.json_map import to_dict
from tests.boards.support import BASE, FakeBoard, burn_identity, fake_uio


def test_program_then_check_bitstream(tmp_path, app_dir):
    built = KVPathConfig(fmt="q4_0")
    regmap = to_dict(build_map(built))
    board = FakeBoard(tmp_path / "root", tools={"xmutil"})
    fake_uio(board.root, {0: ("kvpath", BASE, 0x10000)})
    burn_identity(board.root / "dev/uio0", regmap, built)

    def check(expected):
        with transport.open_uio("kvpath", board.root) as io:
            Registers(io, regmap, base=0).check_bitstream(expected)

    program(app_dir, **dict(board.kwargs(), check=lambda: check(built)))
    with pytest.raises(BitstreamMismatch, match="CFG_FORMAT.format"):
        program(app_dir, **dict(board.kwargs(), check=lambda: check(KVPathConfig(fmt="q8_0"))))
