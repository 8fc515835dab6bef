"""``.bit`` -> ``.bit.bin``: the bitstream file the ZynqMP fpga_manager and dfx-mgr load.

What bootgen writes, and why this matches it. ``bootgen -arch zynqmp -process_bitstream bin`` with
a BIF ``all: { x.bit }`` (Xilinx/bootgen, open source, Apache-2.0):

* ``BitFile::ReadBITHeader_x4k`` reads the header: a 2-byte length (9) and the 9 bytes
  ``0F F0 0F F0 0F F0 0F F0 00``, a 2-byte field (``00 01``), then the keyed fields ``'a'`` design
  name, ``'b'`` part, ``'c'`` date, ``'d'`` time - each a 2-byte big-endian length followed by that
  many bytes, NUL included - and ``'e'`` with a 4-byte big-endian byte count of the configuration
  data that follows. (The same layout as the public fpga-faq "Tell me about .bit files" note and
  u-boot's ``fpga_loadbitstream``.)
* For ZynqMP without encryption ``ZynqMpBitFile::GetBitStripFlag`` is false, so ``BitFile::Copy``
  copies all ``e`` bytes - the 0xFFFFFFFF padding and the bus-width words (0x000000BB, 0x11220044)
  before the sync word included - reading big-endian 32-bit words and writing them through
  ``OutputStream_LE``: every 32-bit word byte-reversed. ``GetBitPadFlag`` is false: no padding.
* ``ComparePartsDataBase`` accepts part names starting with xqzu, xczu, xazu or xck (K26).

So the output is exactly the ``e`` data bytes, each 4-byte group reversed. Bootgen itself does not
look for the sync word; this converter also refuses data without an aligned 0xAA995566, since the
PL would ignore it, and refuses a length field that disagrees with the file (bootgen would read
past the end or silently drop a tail).

Amaranth 0.5's ``write_bitstream -bin_file`` output is *not* this file: it is not byte-swapped
(amaranth issues 519/558), so it must not be loaded through fpga_manager.
"""

from __future__ import annotations

import argparse
import struct
from array import array
import sys
from dataclasses import dataclass
from pathlib import Path

SYNC_WORD = 0xAA995566
MAGIC = b"\x0f\xf0\x0f\xf0\x0f\xf0\x0f\xf0\x00"
ZYNQMP_PARTS = ("xqzu", "xczu", "xazu", "xck")  # bootgen's ZynqMpBitFile::ComparePartsDataBase


class BitFileError(ValueError):
    """The .bit file is not a bitstream this converter can turn into a ZynqMP .bit.bin."""


@dataclass(frozen=True)
class BitHeader:
    design: str
    part: str
    date: str
    time: str
    length: int        # bytes of configuration data ('e' field)
    data_offset: int   # where those bytes start in the file


def _take(buf: bytes, pos: int, n: int, what: str) -> tuple[bytes, int]:
    if pos + n > len(buf):
        raise BitFileError(f"truncated .bit: {what} needs {n} bytes at offset {pos}, "
                           f"the file has {len(buf)} bytes")
    return buf[pos:pos + n], pos + n


def parse_header(buf: bytes) -> BitHeader:
    raw, pos = _take(buf, 0, 2, "magic length")
    (n,) = struct.unpack(">H", raw)
    magic, pos = _take(buf, pos, len(MAGIC), "magic")
    if n != len(MAGIC) or magic != MAGIC:
        raise BitFileError(f"not a Xilinx .bit file: the header does not start with 00 09 "
                           f"{MAGIC.hex(' ')} (got {buf[:11].hex(' ')})")
    _, pos = _take(buf, pos, 2, "field after the magic")
    fields = {}
    for key in "abcd":
        tag, pos = _take(buf, pos, 1, f"field '{key}' tag")
        if tag != key.encode():
            raise BitFileError(f"bad .bit header: expected field '{key}' at offset {pos - 1}, got {tag!r}")
        raw, pos = _take(buf, pos, 2, f"field '{key}' length")
        (n,) = struct.unpack(">H", raw)
        value, pos = _take(buf, pos, n, f"field '{key}'")
        fields[key] = value.rstrip(b"\x00").decode("ascii", "replace")
        if not fields[key]:
            raise BitFileError(f"bad .bit header: field '{key}' is empty")
    tag, pos = _take(buf, pos, 1, "field 'e' tag")
    if tag != b"e":
        raise BitFileError(f"bad .bit header: expected field 'e' at offset {pos - 1}, got {tag!r}")
    raw, pos = _take(buf, pos, 4, "data length")
    (length,) = struct.unpack(">I", raw)
    return BitHeader(fields["a"], fields["b"], fields["c"], fields["d"], length, pos)


def convert_bytes(buf: bytes, *, check_part: bool = True) -> tuple[BitHeader, bytes]:
    """(header, .bit.bin bytes) for the contents of a .bit file."""
    hdr = parse_header(buf)
    have = len(buf) - hdr.data_offset
    if have != hdr.length:
        raise BitFileError(f"length mismatch: the header says {hdr.length} data bytes, the file has "
                           f"{have} after the header (truncated or concatenated file?)")
    if hdr.length % 4:
        raise BitFileError(f"bitstream length {hdr.length} is not a whole number of 32-bit words")
    if check_part and not hdr.part.lower().startswith(ZYNQMP_PARTS):
        raise BitFileError(f"part {hdr.part!r} is not a Zynq UltraScale+ part ({', '.join(ZYNQMP_PARTS)}*)")
    data = bytes(buf[hdr.data_offset:])
    sync = struct.pack(">I", SYNC_WORD)
    at = data.find(sync)
    while at >= 0 and at % 4:
        at = data.find(sync, at + 1)
    if at < 0:
        raise BitFileError("no sync word 0xAA995566 on a 32-bit boundary: this is not configuration data")
    words = array("I")
    if words.itemsize != 4:  # pragma: no cover - every Linux/ARM64/x86-64 CPython has 4-byte 'I'
        raise RuntimeError("array('I') is not 32 bits on this platform")
    words.frombytes(data)
    words.byteswap()  # reverse each 32-bit word, whatever the host's own byte order
    return hdr, words.tobytes()


def convert(bit: Path, out: Path | None = None, *, check_part: bool = True) -> tuple[BitHeader, Path]:
    """Write ``<bit>.bin`` (or ``out``) from ``bit``; return the header and the output path."""
    bit = Path(bit)
    out = Path(out) if out else bit.with_name(bit.name + ".bin")
    hdr, data = convert_bytes(bit.read_bytes(), check_part=check_part)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)  # never leave a half-written .bit.bin where the loader would find it
    return hdr, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kvpath.boards.kv260.bitbin",
                                 description="Convert a Vivado .bit into the byte-swapped .bit.bin that "
                                             "the ZynqMP fpga_manager/dfx-mgr load (what bootgen "
                                             "-arch zynqmp -process_bitstream bin writes).")
    ap.add_argument("bit", help="input .bit file")
    ap.add_argument("-o", "--output", help="output file (default: <bit>.bin)")
    ap.add_argument("--any-part", action="store_true", help="accept a part that is not Zynq UltraScale+")
    args = ap.parse_args(argv)
    try:
        hdr, out = convert(Path(args.bit), Path(args.output) if args.output else None,
                           check_part=not args.any_part)
    except (BitFileError, OSError) as e:
        print(f"error: {args.bit}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({hdr.length} bytes; design {hdr.design}, part {hdr.part}, "
          f"built {hdr.date} {hdr.time})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
