import os

import pytest

LONG = os.environ.get("KVPATH_LONG") == "1"

# Test builds trade Verilator simulation speed for build time (see sim/lib/runner.py); the benchmarks
# and `make demo` keep Verilator's optimised default. Set it to -Os to test the shipped settings.
os.environ.setdefault("KVPATH_VERILATOR_CXX_OPT", "-O0")


def pytest_collection_modifyitems(config, items):
    if LONG:
        return
    skip = pytest.mark.skip(reason="long run: set KVPATH_LONG=1")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    """One build directory per parameter set lives under here, so parallel workers never collide."""
    return tmp_path_factory.mktemp("sim")
