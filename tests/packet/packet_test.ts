import { assert, assertEquals, assertThrows } from "../assert.ts";
import { canonicalIp, parseIp } from "../../ffi/ip.ts";
import { formatIp } from "../../ffi/ip.ts";
import { internetChecksum, transportChecksum } from "../../src/packet/checksum.ts";
import { icmp, ICMP_TIME_EXCEEDED, icmpv6, quotedFlow } from "../../src/packet/icmp.ts";
import { ipv4, ipv6, PROTO } from "../../src/packet/ip.ts";
import { buildTcpPacket, parsePacket } from "../../src/packet/packet.ts";
import { decodeOptions, encodeOptions, FLAGS, tcp } from "../../src/packet/tcp.ts";
import { udp } from "../../src/packet/udp.ts";
import { SYN_TTL2, TIME_EXCEEDED, UDP_OBSERVE } from "../fixtures/packets.ts";

const ip = (text: string) => parseIp(text);

Deno.test("a captured SYN decodes as tcpdump decoded it", () => {
  const { value: header, bytesRead } = ipv4.decode(SYN_TTL2);
  assertEquals(bytesRead, 20);
  assertEquals([header.ttl, header.id, header.dontFragment, header.protocol, header.totalLength], [
    2,
    21292,
    true,
    PROTO.TCP,
    60,
  ]);
  assertEquals([formatIp(header.source), formatIp(header.destination)], ["10.0.1.2", "172.16.2.2"]);
  assert(ipv4.verify(SYN_TTL2));
  const segment = tcp.decode(SYN_TTL2.subarray(20)).value;
  assertEquals([segment.sourcePort, segment.destinationPort, segment.seq, segment.ack], [
    40000,
    50000,
    382572562,
    0,
  ]);
  assertEquals(segment.flags, FLAGS.SYN);
  assertEquals(segment.window, 64240);
  assertEquals(segment.options, {
    mss: 1460,
    sackPermitted: true,
    timestamp: { value: 3904108641, echo: 0 },
    windowScale: 10,
  });
});

Deno.test("the TCP checksum of the captured SYN is the one tcpdump computes (0xa471)", () => {
  const segment = SYN_TTL2.slice(20);
  segment[16] = 0;
  segment[17] = 0;
  assertEquals(transportChecksum(ip("10.0.1.2"), ip("172.16.2.2"), PROTO.TCP, segment), 0xa471);
  // Re-encoding the decoded segment reproduces the bytes with the right checksum.
  const decoded = tcp.decode(SYN_TTL2.subarray(20)).value;
  const encoded = tcp.encode(decoded, ip("10.0.1.2"), ip("172.16.2.2"));
  assertEquals(encoded.subarray(0, 16), SYN_TTL2.subarray(20, 36));
  assertEquals((encoded[16]! << 8) | encoded[17]!, 0xa471);
  assertEquals(encoded.subarray(18), SYN_TTL2.subarray(38));
  assert(tcp.verify(encoded, ip("10.0.1.2"), ip("172.16.2.2")));
});

Deno.test("a captured ICMP time exceeded yields the quoted flow and sequence number", () => {
  const packet = parsePacket(TIME_EXCEEDED);
  assert(packet.checksumsValid);
  assertEquals(packet.protocol, PROTO.ICMP);
  assertEquals([packet.icmp?.type, packet.icmp?.code, packet.icmp?.checksum], [
    ICMP_TIME_EXCEEDED,
    0,
    0x5550,
  ]);
  assertEquals(internetChecksum(TIME_EXCEEDED.subarray(20)), 0);
  const flow = quotedFlow(packet.icmp!.body);
  assertEquals(
    [
      formatIp(flow.source),
      formatIp(flow.destination),
      flow.protocol,
      flow.sourcePort,
      flow.destinationPort,
      flow.seq,
    ],
    ["10.0.1.2", "172.16.2.2", PROTO.TCP, 40000, 50000, 382572562],
  );
  // Re-encoding the message gives the captured checksum.
  const m = packet.icmp!;
  assertEquals(
    icmp.encode({ type: m.type, code: m.code, rest: m.rest, body: m.body }),
    TIME_EXCEEDED.subarray(20),
  );
});

Deno.test("a captured UDP datagram decodes, and its checksum is the one tcpdump computes (0xd6e3)", () => {
  const packet = parsePacket(UDP_OBSERVE);
  assertEquals([packet.udp?.sourcePort, packet.udp?.destinationPort], [40001, 7001]);
  assertEquals(new TextDecoder().decode(packet.udp?.payload), "observe");
  const encoded = udp.encode(packet.udp!, ip("10.0.1.2"), ip("172.16.0.1"));
  assertEquals((encoded[6]! << 8) | encoded[7]!, 0xd6e3);
});

Deno.test("a built IPv4 TCP packet round-trips through parsePacket with valid checksums", () => {
  const segment = {
    sourcePort: 1234,
    destinationPort: 80,
    seq: 0xfffffff0,
    ack: 7,
    flags: FLAGS.SYN | FLAGS.ACK,
    window: 65535,
    urgent: 0,
    options: { mss: 1400, windowScale: 7, sackPermitted: true, timestamp: { value: 1, echo: 2 } },
    payload: new Uint8Array([1, 2, 3]),
  };
  const bytes = buildTcpPacket(ip("192.0.2.1"), ip("198.51.100.2"), segment, { ttl: 3, id: 9 });
  const parsed = parsePacket(bytes);
  assert(parsed.checksumsValid);
  assertEquals(parsed.ip.version, 4);
  assertEquals((parsed.ip as { ttl: number }).ttl, 3);
  const { checksum: _, ...rest } = parsed.tcp!;
  assertEquals(rest, segment);
});

Deno.test("a built IPv6 TCP packet round-trips and its checksum covers the IPv6 pseudo-header", () => {
  const segment = {
    sourcePort: 5,
    destinationPort: 6,
    seq: 1,
    ack: 0,
    flags: FLAGS.SYN,
    window: 1000,
    urgent: 0,
    options: { mss: 1220 },
    payload: new Uint8Array(0),
  };
  const bytes = buildTcpPacket(ip("2001:db8::1"), ip("2001:db8::2"), segment, { ttl: 2 });
  const parsed = parsePacket(bytes);
  assert(parsed.checksumsValid);
  assertEquals(parsed.ip.version, 6);
  assertEquals((parsed.ip as { hopLimit: number }).hopLimit, 2);
  assertEquals(canonicalIp(formatIp(parsed.ip.source)), "2001:db8::1");
  assertEquals(parsed.tcp?.options, { mss: 1220 });
  // A flipped byte breaks the checksum.
  bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
  assert(!parsePacket(bytes).checksumsValid);
});

Deno.test("ICMPv6 time exceeded round-trips and quotes an IPv6 flow", () => {
  const inner = buildTcpPacket(ip("2001:db8::1"), ip("2001:db8::2"), {
    sourcePort: 7,
    destinationPort: 8,
    seq: 99,
    ack: 0,
    flags: FLAGS.SYN,
    window: 1,
    urgent: 0,
    options: {},
    payload: new Uint8Array(0),
  });
  const message = icmpv6.encode(
    { type: 3, code: 0, rest: new Uint8Array(4), body: inner },
    ip("2001:db8::ff"),
    ip("2001:db8::1"),
  );
  assertEquals(transportChecksum(ip("2001:db8::ff"), ip("2001:db8::1"), PROTO.ICMPV6, message), 0);
  const flow = quotedFlow(icmpv6.decode(message).value.body);
  assertEquals([flow.sourcePort, flow.destinationPort, flow.seq, flow.protocol], [
    7,
    8,
    99,
    PROTO.TCP,
  ]);
});

Deno.test("TCP options: unknown kinds are kept by length, bad lengths are refused", () => {
  const options = decodeOptions(new Uint8Array([1, 1, 30, 4, 0xaa, 0xbb, 2, 4, 5, 0xb4, 0]));
  assertEquals(options.mss, 1460);
  assertEquals(options.unknown, [{ kind: 30, data: new Uint8Array([0xaa, 0xbb]) }]);
  assertThrows(() => decodeOptions(new Uint8Array([2, 4, 5])), RangeError);
  assertThrows(() => decodeOptions(new Uint8Array([8, 1])), RangeError);
  assertEquals(encodeOptions({}).length, 0);
  assertEquals(encodeOptions({ mss: 1 }).length % 4, 0);
  assertThrows(() => encodeOptions({ windowScale: 15 }), RangeError);
});

const TRUNCATED: [string, () => unknown][] = [
  ["an IPv4 header of 19 bytes", () => ipv4.decode(SYN_TTL2.subarray(0, 19))],
  [
    "an IPv4 header whose IHL is below 5",
    () => ipv4.decode(new Uint8Array([0x44, ...new Uint8Array(19)])),
  ],
  ["an IPv4 packet shorter than its total length", () => parsePacket(SYN_TTL2.subarray(0, 50))],
  ["an IPv6 header of 39 bytes", () => ipv6.decode(new Uint8Array(39).fill(0x60, 0, 1))],
  ["a TCP header of 19 bytes", () => tcp.decode(SYN_TTL2.subarray(20, 39))],
  [
    "a TCP header whose options run past the data offset",
    () => tcp.decode(SYN_TTL2.subarray(20, 50)),
  ],
  ["a UDP length beyond the buffer", () => udp.decode(UDP_OBSERVE.subarray(20, 30))],
  ["an ICMP message of 7 bytes", () => icmp.decode(TIME_EXCEEDED.subarray(20, 27))],
  ["a quote without its ports", () => quotedFlow(TIME_EXCEEDED.subarray(28, 49))],
  ["an empty packet", () => parsePacket(new Uint8Array(0))],
];

for (const [name, decode] of TRUNCATED) {
  Deno.test(`decoding refuses ${name}`, () => {
    assertThrows(decode, (e: Error) => e instanceof RangeError || e instanceof TypeError);
  });
}

// Found by tests/fuzz: checksumsValid only looked at TCP, so a UDP or ICMP packet with a
// corrupted body was reported valid.
Deno.test("parsePacket checks UDP and ICMP checksums too", () => {
  // The captured datagram carries checksum offload's partial sum (0xb733, tcpdump computes 0xd6e3).
  assertEquals(parsePacket(UDP_OBSERVE).checksumsValid, false);
  const fixed = UDP_OBSERVE.slice();
  fixed.set([0xd6, 0xe3], 20 + 6);
  assertEquals(parsePacket(fixed).checksumsValid, true);
  fixed[fixed.length - 1]! ^= 1;
  assertEquals(parsePacket(fixed).checksumsValid, false);
  const noChecksum = UDP_OBSERVE.slice();
  noChecksum.set([0, 0], 20 + 6);
  assertEquals(parsePacket(noChecksum).checksumsValid, true, "0 means no checksum over IPv4");

  assertEquals(parsePacket(TIME_EXCEEDED).checksumsValid, true);
  const corrupt = TIME_EXCEEDED.slice();
  corrupt[corrupt.length - 1]! ^= 0x10;
  assertEquals(parsePacket(corrupt).checksumsValid, false);
});

Deno.test("parsePacket refuses a zero UDP checksum over IPv6", () => {
  const src = ip("2001:db8::1"), dst = ip("2001:db8::2");
  const datagram = udp.encode(
    { sourcePort: 1, destinationPort: 2, payload: new Uint8Array(3) },
    src,
    dst,
  );
  const packet = new Uint8Array(40 + datagram.length);
  packet.set(ipv6.encode({
    trafficClass: 0,
    flowLabel: 0,
    payloadLength: datagram.length,
    nextHeader: PROTO.UDP,
    hopLimit: 64,
    source: src,
    destination: dst,
  }));
  packet.set(datagram, 40);
  assertEquals(parsePacket(packet).checksumsValid, true);
  packet.set([0, 0], 40 + 6);
  assertEquals(parsePacket(packet).checksumsValid, false);
});

// Found by tests/fuzz: a fragment's payload was decoded as a TCP header, so the data of a later
// fragment (which an attacker controls) could read as a SYN of the attempt's flow.
Deno.test("parsePacket parses no transport layer in an IPv4 fragment", () => {
  for (const flags of [0x40_01, 0x20_00]) { // DF with offset 8 bytes; MF with offset 0
    const fragment = SYN_TTL2.slice();
    fragment.set([flags >> 8, flags & 0xff], 6);
    fragment.set([0, 0], 10);
    const sum = internetChecksum(fragment.subarray(0, 20));
    fragment.set([sum >> 8, sum & 0xff], 10);
    const parsed = parsePacket(fragment);
    assertEquals(parsed.protocol, PROTO.TCP);
    assertEquals(parsed.tcp, undefined);
    assertEquals(parsed.checksumsValid, true, "the IPv4 header itself is right");
  }
});
