"""The .bit -> .bit.bin converter on synthetic bitstreams with the real header layout."""

import struct

import pytest
from tests.boards.support import bit_words, make_bit

from kvpath.boards.kv260 import bitbin


def swapped(words):
    return b"".join(struct.pack("<I", w) for w in words)


def test_header_fields():
    hdr = bitbin.parse_header(make_bit())
    assert (hdr.design.split(";")[0], hdr.part, hdr.date, hdr.time) == (
        "kvpath_bd_wrapper", "xck26-sfvc784-2LV-c", "2025/01/31", "12:34:56")
    assert hdr.length == 4 * len(bit_words())


def test_output_is_every_data_word_byte_reversed(tmp_path):
    words = bit_words(n_payload=1000, seed=7)
    bit = tmp_path / "kvpath.bit"
    bit.write_bytes(make_bit(words))
    hdr, out = bitbin.convert(bit)
    assert out == tmp_path / "kvpath.bit.bin"
    data = out.read_bytes()
    assert data == swapped(words)            # nothing dropped, nothing added: bootgen's Copy()
    assert data[:4] == b"\xff\xff\xff\xff"   # the dummy/pad words are kept
    assert data[32:40] == bytes.fromhex("bb000000 44002211")  # bus-width detection, swapped
    assert data.find(bytes.fromhex("665599aa")) == 48         # the sync word, swapped, in place


def test_cli(tmp_path, capsys):
    bit = tmp_path / "a.bit"
    bit.write_bytes(make_bit())
    assert bitbin.main([str(bit), "-o", str(tmp_path / "x.bin")]) == 0
    assert "xck26-sfvc784-2LV-c" in capsys.readouterr().out
    assert (tmp_path / "x.bin").read_bytes() == swapped(bit_words())
    bit.write_bytes(make_bit()[:-3])
    assert bitbin.main([str(bit)]) == 1
    assert "length mismatch" in capsys.readouterr().err
    assert not (tmp_path / "a.bit.bin").exists()


@pytest.mark.parametrize("blob, words", [
    (make_bit()[:7], "truncated"),                                       # inside the magic
    (make_bit()[:40], "truncated"),                                      # inside field 'a'
    (make_bit()[:make_bit().index(b"e\x00") + 3], "truncated"),          # inside the length
    (make_bit()[:-4], "length mismatch"),                                # data shorter than 'e'
    (make_bit() + b"\x00" * 4, "length mismatch"),                       # data longer than 'e'
    (make_bit(magic=b"\x0f\xf0\x0f\xf0\x0f\xf0\x0f\xf0\x01"), "not a Xilinx .bit"),
    (b"\xff" * 64, "not a Xilinx .bit"),
    (make_bit([0xFFFFFFFF] * 16 + [0x20000000] * 4), "no sync word"),
    (make_bit(data=b"\xff\xff" + struct.pack(">I", 0xAA995566) + b"\x00\x00"), "no sync word"),  # unaligned
    (make_bit(data=struct.pack(">I", 0xAA995566) + b"\x00\x00"), "not a whole number"),
    (make_bit(part="7z020clg400"), "not a Zynq UltraScale\\+ part"),
    (make_bit(design=""), "field 'a' is empty"),
])
def test_errors(blob, words):
    with pytest.raises(bitbin.BitFileError, match=words):
        bitbin.convert_bytes(blob)


def test_other_zynqmp_parts_and_override():
    assert bitbin.convert_bytes(make_bit(part="xczu9eg-ffvb1156-2-e"))[1] == swapped(bit_words())
    assert bitbin.convert_bytes(make_bit(part="7z020clg400"), check_part=False)[0].part == "7z020clg400"
