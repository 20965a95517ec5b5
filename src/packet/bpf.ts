/**
 * Classic BPF programs: for capture sockets in cooked mode (the program sees
 * the packet from its IP header on), and for UDP sockets (it sees the UDP
 * header, then the payload). Pure: builds instructions only.
 *
 * @module
 */

import type { BpfInstruction } from "../../ffi/structs.ts";

// Opcodes (linux/filter.h).
const LD_W_ABS = 0x20;
const LD_W_LEN = 0x80;
const LD_H_ABS = 0x28;
const LD_B_ABS = 0x30;
const LD_H_IND = 0x48;
const LD_B_IND = 0x50;
const LDX_B_MSH = 0xb1;
const ALU_AND_K = 0x54;
const JEQ_K = 0x15;
const JSET_K = 0x45;
const RET_K = 0x06;

/** A TCP flow to capture, as the packets carry it on the wire where the capture runs. */
export interface TcpFlowFilter {
  source: Uint8Array;
  destination: Uint8Array;
  sourcePort: number;
  destinationPort: number;
  /** Pass only segments with SYN set. */
  synOnly?: boolean;
}

type Step = { code: number; k: number; test?: "eq" | "set" };

/**
 * A program passing only IPv4/IPv6 TCP segments of one flow (one direction).
 * IPv6 extension headers are not followed: such packets are rejected.
 */
export function tcpFlowProgram(flow: TcpFlowFilter): BpfInstruction[] {
  const v6 = flow.source.length === 16;
  if (flow.destination.length !== flow.source.length || (!v6 && flow.source.length !== 4)) {
    throw new TypeError("Cannot build a BPF program: addresses must both be IPv4 or both IPv6");
  }
  const word = (bytes: Uint8Array, i: number) =>
    (((bytes[i] ?? 0) << 24) | ((bytes[i + 1] ?? 0) << 16) | ((bytes[i + 2] ?? 0) << 8) |
      (bytes[i + 3] ?? 0)) >>> 0;
  // Each step loads a value and compares it; any mismatch jumps to "reject".
  const steps: Step[] = [];
  const load = (code: number, k: number) => steps.push({ code, k });
  const eq = (k: number) => steps.push({ code: JEQ_K, k, test: "eq" });
  load(LD_B_ABS, 0);
  steps.push({ code: ALU_AND_K, k: 0xf0 });
  eq(v6 ? 0x60 : 0x40);
  if (v6) {
    load(LD_B_ABS, 6);
    eq(6);
    for (let i = 0; i < 16; i += 4) {
      load(LD_W_ABS, 8 + i);
      eq(word(flow.source, i));
    }
    for (let i = 0; i < 16; i += 4) {
      load(LD_W_ABS, 24 + i);
      eq(word(flow.destination, i));
    }
    load(LD_H_ABS, 40);
    eq(flow.sourcePort);
    load(LD_H_ABS, 42);
    eq(flow.destinationPort);
    if (flow.synOnly) {
      load(LD_B_ABS, 53);
      steps.push({ code: JSET_K, k: 0x02, test: "set" });
    }
  } else {
    load(LD_B_ABS, 9);
    eq(6);
    load(LD_W_ABS, 12);
    eq(word(flow.source, 0));
    load(LD_W_ABS, 16);
    eq(word(flow.destination, 0));
    // Fragments other than the first carry no TCP header.
    load(LD_H_ABS, 6);
    steps.push({ code: JSET_K, k: 0x1fff, test: "set" }); // inverted below
    steps.push({ code: LDX_B_MSH, k: 0 });
    load(LD_H_IND, 0);
    eq(flow.sourcePort);
    load(LD_H_IND, 2);
    eq(flow.destinationPort);
    if (flow.synOnly) {
      load(LD_B_IND, 13);
      steps.push({ code: JSET_K, k: 0x02, test: "set" });
    }
  }
  // Resolve jumps: every test jumps to the final "reject" when it fails.
  const program: BpfInstruction[] = [];
  const total = steps.length + 2; // accept, reject
  steps.forEach((step, i) => {
    const toReject = total - 1 - (i + 1);
    if (step.test === undefined) {
      program.push({ code: step.code, jt: 0, jf: 0, k: step.k >>> 0 });
    } else if (step.code === JSET_K && step.k === 0x1fff) {
      // Fragment offset set: reject.
      program.push({ code: step.code, jt: toReject, jf: 0, k: step.k });
    } else {
      program.push({ code: step.code, jt: 0, jf: toReject, k: step.k >>> 0 });
    }
  });
  program.push({ code: RET_K, jt: 0, jf: 0, k: 0x40000 }); // accept (whole packet)
  program.push({ code: RET_K, jt: 0, jf: 0, k: 0 }); // reject
  return program;
}

/** Bytes a datagram's payload must hold at `offset` for {@linkcode udpDropProgram} to drop it. */
export interface PayloadField {
  offset: number;
  bytes: Uint8Array;
}

/** Offset of a UDP socket filter's view of the payload: the program sees the UDP header first. */
export const UDP_FILTER_PAYLOAD_OFFSET = 8;

/**
 * A program for a UDP socket (SO_ATTACH_FILTER) that drops every datagram
 * whose payload is exactly `payloadLength` bytes long and holds each of
 * `fields`, and passes everything else whole. A socket filter on a UDP
 * socket sees the datagram from its UDP header on.
 */
export function udpDropProgram(
  payloadLength: number,
  fields: readonly PayloadField[],
): BpfInstruction[] {
  if (!Number.isInteger(payloadLength) || payloadLength < 1 || payloadLength > 65507) {
    throw new RangeError("Cannot build a BPF program: payload length must be 1-65507");
  }
  const steps: Step[] = [];
  steps.push({ code: LD_W_LEN, k: 0 });
  steps.push({ code: JEQ_K, k: UDP_FILTER_PAYLOAD_OFFSET + payloadLength, test: "eq" });
  for (const field of fields) {
    if (field.offset < 0 || field.offset + field.bytes.length > payloadLength) {
      throw new RangeError("Cannot build a BPF program: a field lies outside the payload");
    }
    let i = 0;
    for (; i + 4 <= field.bytes.length; i += 4) {
      const b = field.bytes;
      const word = ((b[i] ?? 0) << 24 | (b[i + 1] ?? 0) << 16 | (b[i + 2] ?? 0) << 8 |
        (b[i + 3] ?? 0)) >>> 0;
      steps.push({ code: LD_W_ABS, k: UDP_FILTER_PAYLOAD_OFFSET + field.offset + i });
      steps.push({ code: JEQ_K, k: word, test: "eq" });
    }
    for (; i < field.bytes.length; i++) {
      steps.push({ code: LD_B_ABS, k: UDP_FILTER_PAYLOAD_OFFSET + field.offset + i });
      steps.push({ code: JEQ_K, k: field.bytes[i] ?? 0, test: "eq" });
    }
  }
  // Every test that fails jumps to "pass"; all of them holding falls through to "drop".
  const program: BpfInstruction[] = [];
  const total = steps.length + 2; // drop, pass
  steps.forEach((step, i) => {
    const toPass = total - 1 - (i + 1);
    program.push(
      step.test === undefined
        ? { code: step.code, jt: 0, jf: 0, k: step.k >>> 0 }
        : { code: step.code, jt: 0, jf: toPass, k: step.k >>> 0 },
    );
  });
  program.push({ code: RET_K, jt: 0, jf: 0, k: 0 }); // drop
  program.push({ code: RET_K, jt: 0, jf: 0, k: 0xffffffff }); // pass (whole datagram)
  return program;
}
