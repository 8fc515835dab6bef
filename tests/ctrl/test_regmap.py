"""The register map's generated views (SystemRDL, C header, JSON, docs) agree with the one
declaration, the C header compiles, and the driver loader works against the map's model."""

import gc
import re
import shutil
import subprocess

import pytest
from amaranth.hdl import Shape

from kvpath.config import FORMATS, KVPathConfig
from kvpath.driver.regs import BitstreamMismatch, Registers
from kvpath.hdl.ctrl.csr import CSRBlock
from kvpath.hdl.ring.tracker import RingTracker
from kvpath.regmap import DOC_PATH, FILES, build_map, json_map, render_doc, write_all
from kvpath.regmap.map import ring_count_bits, scale_cache_entries
from kvpath.regmap.model import CSRModel
from kvpath.regmap.rdl import compile_rdl

CONFIGS = [
    KVPathConfig(),
    KVPathConfig(fmt="int4_pc", elem="bf16", quant_lanes=32, dequant_lanes=128, max_layers=35,
                 max_kv_heads=4, max_head_dim=128, kv_max_tokens=131072),
    KVPathConfig(fmt="int8_ph", quant_lanes=8, dequant_lanes=8, kv_max_tokens=1),
]


@pytest.fixture(scope="module", params=range(len(CONFIGS)), ids=lambda k: CONFIGS[k].fmt)
def generated(request, tmp_path_factory):
    config = CONFIGS[request.param]
    out = tmp_path_factory.mktemp(f"regmap{request.param}")
    paths = write_all(out, config)
    return config, build_map(config), {p.name: p for p in paths}


def test_write_all_writes_every_view(generated):
    _, _, paths = generated
    assert sorted(paths) == sorted(FILES)
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_systemrdl_compiles_to_the_table(generated):
    _, regmap, paths = generated
    root = compile_rdl(paths["kvpath_regs.rdl"], regmap.name)
    regs = {node.inst_name: node for node in root.top.registers()}
    assert list(regs) == [r.name for r in regmap.registers]
    for r in regmap.registers:
        node = regs[r.name]
        assert node.absolute_address == r.offset
        fields = {f.inst_name: f for f in node.fields()}
        assert list(fields) == [f.name for f in r.fields]
        for f in r.fields:
            rdl = fields[f.name]
            assert (rdl.lsb, rdl.width) == (f.lsb, f.width), f"{r.name}.{f.name}"
            assert rdl.is_sw_readable == (f.access in ("ro", "rw", "w1c")), f"{r.name}.{f.name}"
            assert rdl.is_sw_writable == (f.access != "ro"), f"{r.name}.{f.name}"
            if f.is_constant or f.access != "ro":
                assert rdl.get_property("reset") == f.reset, f"{r.name}.{f.name}"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_header_compiles_and_agrees(generated, tmp_path):
    _, regmap, paths = generated
    prefix = regmap.name.upper()
    checks = [f'#include "{paths["kvpath_regs.h"]}"', "#include <stddef.h>"]
    for r in regmap.registers:
        checks.append(f"_Static_assert(offsetof({regmap.name}_t, {r.name}) == {r.offset}, \"{r.name}\");")
        for f in r.fields:
            macro = f"{prefix}__{r.name}__{f.name.upper()}"
            checks.append(f"_Static_assert({macro}_bp == {f.lsb} && {macro}_bw == {f.width} && "
                          f"{macro}_bm == {f.mask}u, \"{r.name}.{f.name}\");")
            if f.is_constant or f.access != "ro":
                checks.append(f"_Static_assert({macro}_reset == {f.reset}u, \"{r.name}.{f.name}\");")
    source = tmp_path / "check.c"
    source.write_text("\n".join(checks) + "\n")
    # The header alone (peakrdl-cheader targets C11: static_assert), then every agreement check.
    for args in (["-x", "c", str(paths["kvpath_regs.h"])], [str(source)]):
        result = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-fsyntax-only", *args],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_json_agrees_with_the_table(generated):
    config, regmap, paths = generated
    data = json_map.load(paths["kvpath_regs.json"])
    assert data["addr_width"] == regmap.addr_width and data["magic"] == regmap.magic
    assert data["config"]["fmt"] == config.fmt and data["config"]["kv_max_tokens"] == config.kv_max_tokens
    assert [(r["name"], r["offset"], r["reset"], r["access"]) for r in data["registers"]] == \
        [(r.name, r.offset, r.reset, r.access) for r in regmap.registers]
    for jr, r in zip(data["registers"], regmap.registers):
        assert [(f["name"], f["lsb"], f["width"], f["access"], f["reset"], f["port"]) for f in jr["fields"]] == \
            [(f.name, f.lsb, f.width, f.access, f.reset, f.port) for f in r.fields]


def test_markdown_agrees_with_the_table(generated):
    _, regmap, paths = generated
    text = paths["regmap.md"].read_text()
    for r in regmap.registers:
        assert re.search(rf"^\| 0x{r.offset:03X} \| {r.name} \| {re.escape(r.access)} \| 0x{r.reset:08X} \|",
                         text, re.M), r.name
        section = text.split(f"### {r.name} (0x{r.offset:03X})")[1].split("###")[0]
        for f in r.fields:
            bits = f"{f.msb}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
            assert f"| {bits} | {f.name} | {f.access} |" in section, f"{r.name}.{f.name}"


def test_committed_doc_is_up_to_date():
    assert DOC_PATH.read_text() == render_doc(), (
        "docs/regmap.md is stale: regenerate with .venv/bin/python -c "
        "'from kvpath.regmap import DOC_PATH, render_doc; DOC_PATH.write_text(render_doc())'")


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_csr_ports_follow_the_table():
    for config in CONFIGS:
        block, regmap = CSRBlock(config), build_map(config)
        members = block.signature.members
        assert Shape.cast(members["s_axil_awaddr"].shape).width == regmap.addr_width
        for r, f in regmap.fields():
            if f.is_constant:
                continue
            if f.access == "wo":  # a write-stream register's writes leave on its stream
                assert r.stream is not None and r.stream.port in members
                continue
            assert f.port in members, f"{r.name}.{f.name}: no port {f.port}"
            width = 64 if r.wide else f.width
            assert Shape.cast(members[f.port].shape).width == width, f"{f.port}"
            if f.access == "rw":
                assert members[f.port].init == f.reset
        del block
        gc.collect()  # never elaborated on purpose: let the warning fire inside this test's filter


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_config_dependent_values():
    # The ring fields hold exactly what the ring tracker's configuration ports hold.
    for tokens in (1, 4096, 32768, 100_000):
        assert ring_count_bits(KVPathConfig(kv_max_tokens=tokens)) == RingTracker(tokens).count_bits
    gc.collect()
    # Gemma 3n E4B per-channel: 20 KV layers x 2 heads x 256 channels x (K, V), the figure.
    assert scale_cache_entries(KVPathConfig(fmt="int4_pc")) == 20 * 2 * 256 * 2
    assert scale_cache_entries(KVPathConfig(fmt="int8_ph")) == 20 * 2 * 2
    assert scale_cache_entries(KVPathConfig(fmt="q4_0")) == 0
    codes = {build_map(KVPathConfig(fmt=f)).register("CFG_FORMAT").field("format").reset for f in FORMATS}
    assert len(codes) == len(FORMATS)


def test_a_value_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="max_head_dim"):
        build_map(KVPathConfig(max_head_dim=1 << 16))
    with pytest.raises(ValueError, match="max_layers"):
        build_map(KVPathConfig(max_layers=256))


class ModelTransport:
    """The register block's model behind read32/write32, raising on SLVERR like a bus error would."""

    def __init__(self, regmap: dict):
        self.model = CSRModel(regmap)
        self.log = []

    def read32(self, addr):
        data, resp = self.model.read(addr)
        assert resp == 0, f"SLVERR reading 0x{addr:x}"
        return data

    def write32(self, addr, value):
        self.log.append((addr, value))
        assert self.model.write(addr, value) == 0, f"SLVERR writing 0x{addr:x}"


def _driver(config, expected_config=None):
    data = json_map.to_dict(build_map(config))
    transport = ModelTransport(data)
    return Registers(transport, data), transport


def test_driver_accepts_its_own_build_and_refuses_another():
    regs, _ = _driver(CONFIGS[1])
    regs.check_bitstream(CONFIGS[1])
    with pytest.raises(BitstreamMismatch) as info:
        regs.check_bitstream(KVPathConfig(fmt="int4_pc", elem="bf16", quant_lanes=16, dequant_lanes=128,
                                          max_layers=35, max_kv_heads=4, max_head_dim=128,
                                          kv_max_tokens=131072))
    assert "CFG_LANES.quant_lanes: hardware 32 (0x20), expected 16" in str(info.value)
    assert "CFG_FORMAT" not in str(info.value)


def test_driver_fields_counters_and_scales(tmp_path):
    config = CONFIGS[1]
    path = write_all(tmp_path, config)[2]
    data = json_map.load(path)
    transport = ModelTransport(data)
    regs = Registers(transport, path)
    assert regs.read_field("RING_MAX_TOKENS", "value") == config.kv_max_tokens
    regs.write_field("CTRL", "enable", 1)
    assert transport.model.values["enable"] == 1
    regs.write_field("CTRL", "soft_reset", 1)
    assert transport.model.pulses == [("soft_reset", 1)] and transport.model.values["enable"] == 1
    transport.model.sticky.update(nonfinite_seen=1, axi_error=1)
    regs.write_field("STATUS", "axi_error", 1)  # clears that bit only
    assert transport.model.sticky["nonfinite_seen"] == 1 and transport.model.sticky["axi_error"] == 0
    transport.model.inputs["elems_quantized"] = 0x1234_5678_9ABC_DEF0
    assert regs.read_counter("elems_quantized") == 0x1234_5678_9ABC_DEF0
    transport.model.inputs["nonfinite_elems"] = 77
    assert regs.read_counter("nonfinite_elems") == 77
    assert regs.load_scales(10, [1, 2, 3]) == 3
    assert transport.model.scale_writes == [(10, 1), (11, 2), (12, 3)]
    entries = scale_cache_entries(config)
    with pytest.raises(ValueError, match="outside the scale cache"):
        regs.load_scales(entries - 1, [1, 2])
    with pytest.raises(ValueError, match="read-only"):
        regs.write("CFG_LANES", 0)
    with pytest.raises(ValueError, match="does not fit"):
        regs.write_field("RING_SINKS", "value", 1 << ring_count_bits(config))
    with pytest.raises(ValueError, match="no register"):
        regs.read("NOPE")
