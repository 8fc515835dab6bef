"""The AMD Kria KV260 (K26 SOM, XCK26, Zynq UltraScale+): build inputs, app folder, programming.

=============  =====================================================================
params         the build parameters (masters, clock, register window, KV region), checked once
ports          the port contract of the engine's Vivado top ``kvpath_axi_top`` (parse, group, check)
platform       Amaranth ``XilinxPlatform`` for the K26 SOM on the KV260 carrier
vivado_tcl     XDC and the block-design + build TCL (with the allow-list of PS properties)
bitbin         ``.bit`` -> ``.bit.bin``, what bootgen writes for ZynqMP
overlay        device-tree overlay source and its ``dtc -@`` compile
app            the Kria app folder and ``build.sh`` (``kvpath build --board kv260``)
program        load an app folder on the board (``kvpath program``)
=============  =====================================================================

The driver's side of the board (UIO / ``/dev/mem`` registers, u-dma-buf or pynq KV memory) is
``kvpath.driver.board``. Nothing here runs Vivado or touches a board by itself; docs/kv260.md says
what was verified where. Modules are imported one by one so the board needs no Amaranth.
"""
