"""Load a kvpath app folder onto the KV260 and check that the right build answered.

``program(app_dir, sysroot="/", check=...)`` picks the first loader that exists:

1. ``xmutil`` (Kria Ubuntu / PetaLinux): copy the folder to ``/lib/firmware/xilinx/<app>/``,
   ``xmutil unloadapp`` (whatever was loaded; failure is only noted - there may be nothing to
   unload), ``xmutil loadapp <app>``. dfx-mgr applies ``<app>.dtbo``, which loads the bitstream.
2. ``dfx-mgr-client -b <bin> -f Full -o <dtbo> -n <app>``: the same daemon without xmutil.
3. The fpga_manager sysfs files: ``/lib/firmware/<app>.bit.bin``, ``echo 0 > flags`` (full
   bitstream), ``echo <app>.bit.bin > firmware``, then poll ``state`` until ``operating``.
   This loads the bitstream only: the overlay (UIO node, u-dma-buf, AFI widths, PL clock rate) is
   *not* applied, and the result says so. With hpm0_width=32 the AFI width in particular stays at
   the boot firmware's value, so register access can be wrong until the overlay is applied.

dfx-mgr-client comes before raw sysfs (issue 11 lists it last) because it applies the overlay
too; sysfs is the fallback for images without dfx-mgr. ``method=`` forces one.

Then ``check()`` runs: the driver's ``check_bitstream`` (ID, VERSION, configuration registers),
which refuses a build that is not the expected one.

``sysroot`` prefixes every /sys, /dev and /lib/firmware path: it exists for tests (a fake tree in a
temporary folder) and for preparing a chroot; on the board it is "/". Commands go through
``runner`` and sysfs writes through ``on_write`` so tests can record and react to them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .params import app_files

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]
METHODS = ("xmutil", "dfx-mgr-client", "fpga_manager")


class ProgramError(RuntimeError):
    """Loading failed; the message says what to fix."""


@dataclass
class LoadResult:
    method: str
    overlay_applied: bool
    notes: list[str] = field(default_factory=list)


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True)


def under(sysroot: str | Path, path: str) -> Path:
    """``path`` (absolute, on the board) inside ``sysroot``."""
    return Path(sysroot) / path.lstrip("/")


def check_app_dir(app_dir: Path) -> str:
    """The app name (the folder's name) if the folder is complete; else ProgramError naming what lacks."""
    app_dir = Path(app_dir)
    if not app_dir.is_dir():
        raise ProgramError(f"app folder {app_dir} does not exist")
    app = app_dir.name
    missing = [f for f in app_files(app) if not (app_dir / f).is_file()]
    if missing:
        raise ProgramError(f"app folder {app_dir} is incomplete: missing {', '.join(missing)}"
                           + (" (no bitstream: build it with Vivado first, see build.sh)"
                              if f"{app}.bit.bin" in missing else ""))
    return app


class _Board:
    """The board's files and commands, as seen through sysroot and the injected hooks."""

    def __init__(self, sysroot, runner, on_write):
        self.sysroot = Path(sysroot)
        self.runner = runner
        self.on_write = on_write
        self.mgr = under(sysroot, "/sys/class/fpga_manager/fpga0")

    def write(self, path: Path, text: str) -> None:
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as e:
            raise ProgramError(f"cannot write {text.strip()!r} to {path}: {e}") from e
        if self.on_write:
            self.on_write(path, text)

    def state(self) -> str | None:
        p = self.mgr / "state"
        return p.read_text().strip() if p.exists() else None

    def cmd(self, argv: list[str], *, must: bool = True) -> subprocess.CompletedProcess:
        r = self.runner(argv)
        if must and r.returncode:
            raise ProgramError(f"{' '.join(argv)} failed (exit {r.returncode}):\n"
                               f"{(r.stdout or '').strip()}\n{(r.stderr or '').strip()}".rstrip())
        return r

    def install(self, app_dir: Path, app: str) -> Path:
        dest = under(self.sysroot, f"/lib/firmware/xilinx/{app}")
        dest.mkdir(parents=True, exist_ok=True)
        if dest.resolve() != app_dir.resolve():  # already installed there: nothing to copy
            for f in app_files(app):
                shutil.copyfile(app_dir / f, dest / f)
        return dest

    def expect_operating(self, after: str) -> None:
        state = self.state()
        if state is not None and state != "operating":
            raise ProgramError(f"fpga_manager state is {state!r} after {after}, expected 'operating'")


def program(app_dir: str | Path, sysroot: str | Path = "/", check: Callable[[], None] | None = None, *,
            method: str = "auto", runner: Runner = _run,
            which: Callable[[str], str | None] | None = None,
            geteuid: Callable[[], int] | None = None,
            on_write: Callable[[Path, str], None] | None = None,
            timeout_s: float = 10.0, poll_s: float = 0.05,
            sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> LoadResult:
    """Load ``app_dir`` (a Kria app folder) and run ``check``; see the module docstring."""
    # Looked up at call time, not bound as defaults, so tests can stand in for them.
    which = which or shutil.which
    geteuid = geteuid or os.geteuid
    app_dir = Path(app_dir).resolve()
    app = check_app_dir(app_dir)
    if geteuid() != 0:
        raise ProgramError("loading a bitstream needs root (it writes /lib/firmware and "
                           "/sys/class/fpga_manager); run with sudo")
    if method == "auto":
        method = next((m for m in METHODS[:2] if which(m)), "fpga_manager")
    elif method not in METHODS:
        raise ProgramError(f"method {method!r}: choose auto, {', '.join(METHODS)}")
    elif method != "fpga_manager" and not which(method):
        raise ProgramError(f"{method} is not installed")
    board = _Board(sysroot, runner, on_write)
    result = LoadResult(method, overlay_applied=method != "fpga_manager")

    if method == "xmutil":
        board.install(app_dir, app)
        r = board.cmd(["xmutil", "unloadapp"], must=False)
        if r.returncode:
            result.notes.append(f"xmutil unloadapp exited {r.returncode} (nothing loaded?)")
        board.cmd(["xmutil", "loadapp", app])
        board.expect_operating(f"xmutil loadapp {app}")
    elif method == "dfx-mgr-client":
        board.install(app_dir, app)
        board.cmd(["dfx-mgr-client", "-b", str(app_dir / f"{app}.bit.bin"), "-f", "Full",
                   "-o", str(app_dir / f"{app}.dtbo"), "-n", app])
        board.expect_operating(f"dfx-mgr-client -n {app}")
    else:
        if not board.mgr.is_dir():
            raise ProgramError(f"no fpga_manager at {board.mgr}: this kernel cannot load bitstreams "
                               "(CONFIG_FPGA_MGR_ZYNQMP_FPGA), and neither xmutil nor dfx-mgr-client "
                               "is installed")
        firmware = under(sysroot, "/lib/firmware")
        firmware.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(app_dir / f"{app}.bit.bin", firmware / f"{app}.bit.bin")
        board.write(board.mgr / "flags", "0\n")
        board.write(board.mgr / "firmware", f"{app}.bit.bin\n")
        deadline = clock() + timeout_s
        state = board.state()
        while state != "operating" and clock() < deadline:
            sleep(poll_s)
            state = board.state()
        if state != "operating":
            raise ProgramError(f"fpga_manager state is {state!r} {timeout_s:g} s after writing "
                               f"firmware, expected 'operating' (see dmesg)")
        result.notes.append("fpga_manager loads the bitstream only: the overlay (UIO, u-dma-buf, AFI "
                            "widths, PL clock) was not applied; use xmutil or dfx-mgr-client for that")
    if check is not None:
        check()
    return result
