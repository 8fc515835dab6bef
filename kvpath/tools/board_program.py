"""kvpath program: load a Kria app folder on the KV260, then check that the build it holds answers.

Loader: ``xmutil``, else ``dfx-mgr-client``, else the fpga_manager sysfs files
(``kvpath.boards.kv260.program``). The check reads ID, VERSION and the configuration registers
through the board backend (``kvpath.driver.board``) and refuses a bitstream whose configuration
differs from the register map's (``Registers.check_bitstream``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from kvpath.config import KVPathConfig

REGMAP_NAME = "kvpath_regs.json"


def config_of(regmap: dict) -> KVPathConfig:
    """The configuration a register map was generated for (its ``config`` block)."""
    names = {f.name for f in dataclasses.fields(KVPathConfig)}
    return KVPathConfig(**{k: v for k, v in regmap["config"].items() if k in names})


def bitstream_check(regmap_path: Path, sysroot: str | Path, uio_name: str, devmem: tuple[int, int]):
    """(check, expected): ``check()`` opens the registers and runs ``check_bitstream`` against the
    configuration ``expected`` that ``regmap_path`` was generated for."""
    from kvpath.driver.board import open_registers
    from kvpath.driver.regs import Registers
    from kvpath.regmap import json_map

    regmap = json_map.load(regmap_path)
    expected = config_of(regmap)

    def check() -> None:
        with open_registers(uio_name, sysroot, devmem) as window:
            Registers(window, regmap, base=0).check_bitstream(expected)

    return check, expected


def main(argv=None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--app", required=True, type=Path,
                    help="app folder: <app>.bit.bin, <app>.dtbo, shell.json (and kvpath_regs.json)")
    ap.add_argument("--sysroot", default="/",
                    help="prefix for every /sys, /dev and /lib/firmware path; for tests and chroots, "
                         "'/' on the board")
    ap.add_argument("--method", default="auto", choices=("auto", "xmutil", "dfx-mgr-client", "fpga_manager"))
    ap.add_argument("--regmap", type=Path, help=f"register map to check against (default: <app>/{REGMAP_NAME})")
    ap.add_argument("--no-check", action="store_true", help="load only; do not read the registers back")
    ap.add_argument("--uio-name", default="kvpath", help="UIO device of the register block")
    ap.add_argument("--reg-base", type=lambda s: int(s, 0), default=0xA000_0000,
                    help="register window for /dev/mem when there is no UIO device")
    ap.add_argument("--reg-size", type=lambda s: int(s, 0), default=0x10000)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for 'operating'")
    args = ap.parse_args(argv)

    from kvpath.boards.kv260.program import ProgramError, program
    from kvpath.driver.board import DeviceNotFound, WindowError
    from kvpath.driver.regs import BitstreamMismatch

    name = prog or "kvpath program"
    check = expected = None
    if not args.no_check:
        regmap = args.regmap or args.app / REGMAP_NAME
        if not regmap.is_file():
            print(f"{name}: error: no register map at {regmap}: pass --regmap (the {REGMAP_NAME} of "
                  "the build) or --no-check", file=sys.stderr)
            return 2
        try:
            check, expected = bitstream_check(regmap, args.sysroot, args.uio_name, (args.reg_base, args.reg_size))
        except (ValueError, OSError) as e:
            print(f"{name}: error: {e}", file=sys.stderr)
            return 2
    try:
        result = program(args.app, args.sysroot, check, method=args.method, timeout_s=args.timeout)
    except BitstreamMismatch as e:
        print(f"{name}: refused: {e}", file=sys.stderr)
        return 1
    except (ProgramError, DeviceNotFound, WindowError, OSError) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
    print(f"loaded {args.app.resolve().name} with {result.method}"
          + ("" if result.overlay_applied else " (bitstream only, no overlay)"))
    for note in result.notes:
        print(f"note: {note}")
    if check is not None:
        print(f"bitstream check: ID, VERSION and configuration match {expected}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
