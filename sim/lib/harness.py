"""A Verilog stream harness that feeds a DUT from a preloaded memory and records what it emits.

Per-cycle Python caps a cocotb testbench at a few ten thousand cycles per second; here the
stimulus sits in a ``$readmemh`` memory and two independent generators make the valid/ready
bubbles, so cocotb only starts a run and waits for ``done``. The responses land in a memory that
``$writememh`` dumps for byte-exact comparison in Python.

The harness also holds the DUT's output to the AXI-Stream rule on every cycle: once ``o.valid`` is
high it must stay high, with the same payload, until ``o.ready`` takes the beat. Violations are
counted (``rule_errors``, first at ``rule_first``) and fail the run (``tb_stream.py``).

The DUT must have ``clk``, ``rst`` and streams ``i`` / ``o`` named the way Amaranth flattens them
(``i__valid``, ``i__ready``, ``i__payload``, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HARNESS_TOP = "kvpath_stream_harness"
STIM_FILE = "stim.hex"
RESP_FILE = "resp.hex"
# Throttle thresholds are out of 256: a side is active on a cycle when an 8-bit LFSR draw is below
# the threshold, so 256 means "never pauses".
NO_PAUSE = 256


def harness_verilog(dut_module: str, in_bits: int, out_bits: int, in_depth: int, out_depth: int,
                    counters: dict[str, int]) -> str:
    """Verilog text of the harness around ``dut_module``; ``counters`` are DUT outputs to expose."""
    counter_ports = "".join(f",\n    output wire [{w - 1}:0] dut_{n}" for n, w in counters.items())
    counter_conns = "".join(f",\n        .{n}(dut_{n})" for n in counters)
    return f"""\
`timescale 1ns/1ps
module {HARNESS_TOP} (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire        dump,
    input  wire [31:0] n_in,
    input  wire [31:0] n_out,
    input  wire [8:0]  valid_thr,
    input  wire [8:0]  ready_thr,
    input  wire [31:0] seed,
    output reg         done,
    output reg  [31:0] cycles,
    output reg  [31:0] in_sent,
    output reg  [31:0] out_got,
    output reg  [31:0] first_in,
    output reg  [31:0] last_in,
    output reg  [31:0] first_out,
    output reg  [31:0] last_out,
    output reg  [31:0] rule_errors,
    output reg  [31:0] rule_first{counter_ports}
);
    reg [{in_bits - 1}:0]  stim [0:{in_depth - 1}];
    reg [{out_bits - 1}:0] resp [0:{out_depth - 1}];
    initial $readmemh("{STIM_FILE}", stim);
    always @(posedge clk) if (dump) $writememh("{RESP_FILE}", resp, 0, {out_depth - 1});

    // Two xorshift32 generators, one per side, so input bubbles and output stalls are independent.
    reg [31:0] lfsr_v, lfsr_r;
    wire [31:0] lfsr_v1 = lfsr_v ^ (lfsr_v << 13);
    wire [31:0] lfsr_v2 = lfsr_v1 ^ (lfsr_v1 >> 17);
    wire [31:0] lfsr_v_next = lfsr_v2 ^ (lfsr_v2 << 5);
    wire [31:0] lfsr_r1 = lfsr_r ^ (lfsr_r << 13);
    wire [31:0] lfsr_r2 = lfsr_r1 ^ (lfsr_r1 >> 17);
    wire [31:0] lfsr_r_next = lfsr_r2 ^ (lfsr_r2 << 5);

    reg running;
    reg i_valid;
    reg o_ready;
    wire i_ready;
    wire o_valid;
    wire [{out_bits - 1}:0] o_payload;
    wire i_fire = i_valid & i_ready;
    wire o_fire = o_valid & o_ready;
    wire [31:0] sent_next = in_sent + {{31'd0, i_fire}};

    // The AXI-Stream source rule on the DUT's output: a beat offered and not taken on one edge
    // must be offered again, unchanged, on the next.
    reg o_waiting;
    reg [{out_bits - 1}:0] o_waiting_payload;
    wire rule_broken = o_waiting && (!o_valid || o_payload != o_waiting_payload);

    {dut_module} u_dut (
        .clk(clk),
        .rst(rst),
        .i__valid(i_valid),
        .i__ready(i_ready),
        .i__payload(stim[in_sent]),
        .o__valid(o_valid),
        .o__ready(o_ready),
        .o__payload(o_payload){counter_conns}
    );

    always @(posedge clk) begin
        o_waiting <= o_valid && !o_ready;
        o_waiting_payload <= o_payload;
        if (rule_broken && !rst) begin
            if (rule_errors == 32'd0) rule_first <= cycles;
            rule_errors <= rule_errors + 32'd1;
        end
        if (rst) begin
            running <= 1'b0; done <= 1'b0; cycles <= 32'd0; in_sent <= 32'd0; out_got <= 32'd0;
            i_valid <= 1'b0; o_ready <= 1'b0; rule_errors <= 32'd0; rule_first <= 32'd0;
            lfsr_v <= seed | 32'd1; lfsr_r <= (seed ^ 32'h9e3779b9) | 32'd1;
        end else if (start) begin
            running <= 1'b1; done <= 1'b0; cycles <= 32'd0; in_sent <= 32'd0; out_got <= 32'd0;
            i_valid <= 1'b0; o_ready <= 1'b0;
            first_in <= 32'd0; last_in <= 32'd0; first_out <= 32'd0; last_out <= 32'd0;
        end else if (running) begin
            // Cycle stamps of the first and last beat on each side give the steady-state rate,
            // free of pipeline fill and drain.
            if (i_fire) begin
                if (in_sent == 32'd0) first_in <= cycles;
                last_in <= cycles;
            end
            if (o_fire) begin
                if (out_got == 32'd0) first_out <= cycles;
                last_out <= cycles;
            end
            lfsr_v <= lfsr_v_next;
            lfsr_r <= lfsr_r_next;
            cycles <= cycles + 32'd1;
            in_sent <= sent_next;
            // A presented beat stays valid until taken (AXI-Stream); a new one may follow at once.
            if (!i_valid || i_ready)
                i_valid <= (sent_next < n_in) && ({{1'b0, lfsr_v[7:0]}} < valid_thr);
            o_ready <= {{1'b0, lfsr_r[7:0]}} < ready_thr;
            if (o_fire) begin
                resp[out_got] <= o_payload;
                out_got <= out_got + 32'd1;
                if (out_got + 32'd1 == n_out) begin
                    running <= 1'b0;
                    done <= 1'b1;
                end
            end
        end
    end
endmodule
"""


def write_hex(path: Path, beats: np.ndarray) -> None:
    """Write ``beats`` (n, bytes_per_beat) uint8, little-endian words, as a $readmemh file."""
    beats = np.ascontiguousarray(beats, dtype=np.uint8)
    text = "\n".join(row.tobytes()[::-1].hex() for row in beats)
    Path(path).write_text(text + "\n")


def read_hex(path: Path, count: int, bytes_per_beat: int) -> np.ndarray:
    """Read the first ``count`` words of a $writememh file as (count, bytes_per_beat) uint8."""
    words = []
    for line in Path(path).read_text().splitlines():
        line = line.split("//")[0].strip()
        if not line or line.startswith("@"):
            continue
        words.extend(line.split())
        if len(words) >= count:
            break
    if len(words) < count:
        raise RuntimeError(f"{path} holds {len(words)} words, expected {count}")
    out = np.empty((count, bytes_per_beat), dtype=np.uint8)
    for k, word in enumerate(words[:count]):
        if any(c in word for c in "xXzZ"):
            raise RuntimeError(f"{path}: word {k} has unknown bits: {word}")
        out[k] = np.frombuffer(bytes.fromhex(word.zfill(2 * bytes_per_beat))[::-1], dtype=np.uint8)
    return out
