/**
 * Fuzz test of the classic BPF flow filters (src/packet/bpf.ts) and their
 * struct sock_filter codec (ffi/structs.ts): 100,000 packets, built for the
 * flow and then edited (bit flips, field substitutions, IPv4 options,
 * fragments, cuts) or random, run through a classic BPF interpreter with the
 * kernel's semantics (a load past the packet's end rejects it). The program
 * must pass exactly the TCP segments of its flow, read straight from the
 * bytes; fixed seeds in each test's name.
 */

import fc from "fast-check";
import { assert, assertEquals, assertStrictEquals } from "../assert.ts";
import { type BpfInstruction, sockFilter } from "../../ffi/structs.ts";
import { type TcpFlowFilter, tcpFlowProgram } from "../../src/packet/bpf.ts";
import { ipv4, ipv6, PROTO, tcp } from "../../src/packet/packet.ts";
import { edits, u16, u8 } from "./packet_arbitraries.ts";
import { ipv4Bytes, ipv6Bytes, mutateAllBytes, params } from "./fuzz.ts";

const SEED = 0xb9f;

/** Runs a classic BPF program (the opcodes flow filters use) over `packet`; returns its verdict. */
function run(program: readonly BpfInstruction[], packet: Uint8Array): number {
  let a = 0, x = 0;
  const load = (offset: number, size: number): number | undefined => {
    if (offset < 0 || offset + size > packet.length) return undefined;
    let v = 0;
    for (let i = 0; i < size; i++) v = v * 256 + (packet[offset + i] ?? 0);
    return v;
  };
  for (let pc = 0; pc < program.length; pc++) {
    const { code, jt, jf, k } = program[pc]!;
    switch (code & 0x07) {
      case 0x00: { // BPF_LD | size | ABS or IND
        const size = { 0x00: 4, 0x08: 2, 0x10: 1 }[code & 0x18];
        const mode = code & 0xe0;
        assert(size !== undefined && (mode === 0x20 || mode === 0x40), `opcode ${code}`);
        const v = load(mode === 0x20 ? k : x + k, size);
        if (v === undefined) return 0;
        a = v;
        break;
      }
      case 0x01: { // BPF_LDX | BPF_B | BPF_MSH: X = 4 * (P[k] & 0xf)
        assertStrictEquals(code, 0xb1);
        const v = load(k, 1);
        if (v === undefined) return 0;
        x = (v & 0x0f) * 4;
        break;
      }
      case 0x04: // BPF_ALU | BPF_AND | BPF_K
        assertStrictEquals(code, 0x54);
        a = (a & k) >>> 0;
        break;
      case 0x05: { // BPF_JMP | JEQ or JSET | BPF_K
        const op = code & 0xf0;
        assert(op === 0x10 || op === 0x40, `opcode ${code}`);
        const taken = op === 0x10 ? a === k : (a & k) !== 0;
        pc += taken ? jt : jf;
        break;
      }
      case 0x06: // BPF_RET | BPF_K
        return k;
      default:
        throw new Error(`unexpected opcode ${code}`);
    }
  }
  throw new Error("the program ran off its end");
}

/** The bytes of `packet` from `offset`, or undefined when it is too short. */
function bytesAt(packet: Uint8Array, offset: number, length: number): Uint8Array | undefined {
  return offset + length <= packet.length ? packet.subarray(offset, offset + length) : undefined;
}

function same(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && a.every((v, i) => v === b[i]);
}

function port(packet: Uint8Array, offset: number): number | undefined {
  const b = bytesAt(packet, offset, 2);
  return b === undefined ? undefined : (b[0]! << 8) | b[1]!;
}

/** What the filter must pass, read from the bytes: the flow's TCP segments, no later fragment. */
function wanted(flow: TcpFlowFilter, packet: Uint8Array): boolean {
  const v6 = flow.source.length === 16;
  if (packet.length === 0 || ((packet[0] ?? 0) & 0xf0) !== (v6 ? 0x60 : 0x40)) return false;
  let transport: number;
  if (v6) {
    if (bytesAt(packet, 6, 1)?.[0] !== PROTO.TCP) return false;
    if (!same(bytesAt(packet, 8, 16), flow.source)) return false;
    if (!same(bytesAt(packet, 24, 16), flow.destination)) return false;
    transport = 40;
  } else {
    if (bytesAt(packet, 9, 1)?.[0] !== PROTO.TCP) return false;
    if (!same(bytesAt(packet, 12, 4), flow.source)) return false;
    if (!same(bytesAt(packet, 16, 4), flow.destination)) return false;
    const fragment = port(packet, 6);
    if (fragment === undefined || (fragment & 0x1fff) !== 0) return false;
    transport = ((packet[0] ?? 0) & 0x0f) * 4;
  }
  if (port(packet, transport) !== flow.sourcePort) return false;
  if (port(packet, transport + 2) !== flow.destinationPort) return false;
  if (flow.synOnly) {
    const flags = bytesAt(packet, transport + 13, 1)?.[0];
    if (flags === undefined || (flags & 0x02) === 0) return false;
  }
  return true;
}

const flowArb: fc.Arbitrary<TcpFlowFilter> = fc
  .record({
    v6: fc.boolean(),
    a4: ipv4Bytes,
    b4: ipv4Bytes,
    a6: ipv6Bytes,
    b6: ipv6Bytes,
    sourcePort: u16,
    destinationPort: u16,
    synOnly: fc.boolean(),
  })
  .map(({ v6, a4, b4, a6, b6, ...rest }) => ({
    source: v6 ? a6 : a4,
    destination: v6 ? b6 : b4,
    ...rest,
  }));

/** A TCP packet of `flow` (or with some of its fields swapped for others), before edits. */
const packetFor = (flow: TcpFlowFilter) =>
  fc
    .record({
      otherFamily: fc.boolean(),
      swap: fc.constantFrom("none", "none", "none", "source", "destination", "ports", "protocol"),
      other4: ipv4Bytes,
      other6: ipv6Bytes,
      otherPort: u16,
      flags: fc.oneof(fc.constantFrom(0x02, 0x12, 0x10), u8),
      optionWords: fc.oneof(fc.constant(0), fc.nat(10)),
      fragment: fc.oneof(fc.constant(0), fc.constant(0x2000), fc.nat(0x1fff)),
      payload: fc.uint8Array({ maxLength: 16 }),
    })
    .map((p) => {
      const v6 = (flow.source.length === 16) !== p.otherFamily;
      const other = v6 ? p.other6 : p.other4;
      const own = (a: Uint8Array) => a.length === other.length ? a : other;
      const source = p.swap === "source" ? other : own(flow.source);
      const destination = p.swap === "destination" ? other : own(flow.destination);
      const body = tcp.encode(
        {
          sourcePort: p.swap === "ports" ? p.otherPort : flow.sourcePort,
          destinationPort: flow.destinationPort,
          seq: 1,
          ack: 0,
          flags: p.flags,
          window: 1024,
          urgent: 0,
          options: {},
          payload: p.payload,
        },
        source,
        destination,
      );
      const protocol = p.swap === "protocol" ? PROTO.UDP : PROTO.TCP;
      const header = v6
        ? ipv6.encode({
          trafficClass: 0,
          flowLabel: 0,
          payloadLength: body.length,
          nextHeader: protocol,
          hopLimit: 64,
          source,
          destination,
        })
        : ipv4.encode({
          tos: 0,
          totalLength: 20 + 4 * p.optionWords + body.length,
          id: 7,
          dontFragment: false,
          moreFragments: (p.fragment & 0x2000) !== 0,
          fragmentOffset: p.fragment & 0x1fff,
          ttl: 64,
          protocol,
          source,
          destination,
          options: new Uint8Array(4 * p.optionWords).fill(1), // NOPs
        });
      const out = new Uint8Array(header.length + body.length);
      out.set(header);
      out.set(body, header.length);
      return out;
    });

const caseArb = flowArb.chain((flow) =>
  fc.record({
    flow: fc.constant(flow),
    packet: fc.oneof(
      { weight: 3, arbitrary: packetFor(flow) },
      {
        weight: 3,
        arbitrary: fc.tuple(packetFor(flow), edits).map(([p, m]) => mutateAllBytes(p, m)),
      },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 80 }) },
    ),
  })
);

Deno.test(`bpf fuzz: flow programs pass exactly their flow's segments, 100,000 packets (seed ${SEED})`, () => {
  let passed = 0;
  fc.assert(
    fc.property(caseArb, ({ flow, packet }) => {
      const program = tcpFlowProgram(flow);
      const verdict = run(program, packet);
      assertStrictEquals(verdict !== 0, wanted(flow, packet));
      if (verdict !== 0) passed++;
    }),
    params(SEED, 100_000),
  );
  // The generator must reach both verdicts often, or the property says little.
  assert(passed > 5_000, `only ${passed} packets passed`);
});

Deno.test(`bpf fuzz: 20,000 flow programs load in the kernel's verifier's terms and round-trip as sock_filter (seed ${SEED + 1})`, () => {
  fc.assert(
    fc.property(flowArb, (flow) => {
      const program = tcpFlowProgram(flow);
      assert(program.length >= 2 && program.length <= 4096);
      assertStrictEquals(program.at(-1)?.code, 0x06, "ends in RET");
      program.forEach((ins, pc) => {
        for (const field of [ins.jt, ins.jf]) {
          assert(Number.isInteger(field) && field >= 0 && field <= 255);
        }
        assert(Number.isInteger(ins.k) && ins.k >= 0 && ins.k <= 0xffffffff);
        if ((ins.code & 0x07) === 0x05) {
          assert(
            pc + 1 + Math.max(ins.jt, ins.jf) < program.length,
            `jump out of program at ${pc}`,
          );
        }
      });
      const bytes = sockFilter.encode(program);
      assertStrictEquals(bytes.length, sockFilter.encodedLength(program));
      assertEquals(sockFilter.decode(bytes), { value: program, bytesRead: bytes.length });
    }),
    params(SEED + 1, 20_000),
  );
});
