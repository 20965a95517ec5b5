/**
 * Generators and checks shared by the packet fuzz tests: header fields with
 * their extremes favoured, TCP options (known kinds and unknown ones), UDP
 * datagrams, ICMP messages, and the documented-error check of the packet
 * codecs (TypeError or RangeError, message "Cannot ...").
 *
 * @module
 */

import fc from "fast-check";
import { assert } from "../assert.ts";
import type { IcmpMessage } from "../../src/packet/icmp.ts";
import {
  ipv4,
  type Ipv4Header,
  ipv6,
  type Ipv6Header,
  tcp,
  type TcpSegment,
  type UdpDatagram,
} from "../../src/packet/packet.ts";
import type { TcpOptions } from "../../src/packet/tcp.ts";
import { byteMutation, ipv4Bytes, ipv6Bytes } from "./fuzz.ts";

/** A byte. */
export const u8 = fc.nat(0xff);
/** A 16-bit field, extremes favoured. */
export const u16 = fc.oneof(fc.constantFrom(0, 1, 0x7fff, 0xffff), fc.nat(0xffff));
/** A 32-bit field, extremes favoured. */
export const u32 = fc.oneof(fc.constantFrom(0, 1, 0x7fffffff, 0xffffffff), fc.nat(0xffffffff));
/** 1-5 byte edits. */
export const edits = fc.array(byteMutation, { minLength: 1, maxLength: 5 });
/** A payload of up to 96 bytes. */
export const payload = fc.uint8Array({ maxLength: 96 });

/** A decoder call: its value, or undefined after a TypeError/RangeError "Cannot ...". */
export function decoded<T>(decode: () => T): T | undefined {
  try {
    return decode();
  } catch (error) {
    assert(
      error instanceof TypeError || error instanceof RangeError,
      `undocumented exception ${String(error)}`,
    );
    assert(error.message.startsWith("Cannot "), `unclear message "${error.message}"`);
    return undefined;
  }
}

/** What ipv4.encode takes. */
export type Ipv4Fields = Omit<Ipv4Header, "version" | "checksum">;

/** IPv4 header fields; the total length covers at least the header. */
export const ipv4Fields: fc.Arbitrary<Ipv4Fields> = fc
  .record({
    tos: u8,
    id: u16,
    dontFragment: fc.boolean(),
    moreFragments: fc.boolean(),
    fragmentOffset: fc.oneof(fc.constant(0), fc.nat(0x1fff)),
    ttl: u8,
    protocol: fc.oneof(fc.constantFrom(1, 6, 17, 58), u8),
    source: ipv4Bytes,
    destination: ipv4Bytes,
    options: fc.nat(10).chain((words) =>
      fc.uint8Array({ minLength: 4 * words, maxLength: 4 * words })
    ),
    extra: fc.nat(0xffff),
  })
  .map(({ extra, ...h }) => ({
    ...h,
    totalLength: Math.min(0xffff, 20 + h.options.length + extra),
  }));

/** IPv6 fixed header fields. */
export const ipv6Fields: fc.Arbitrary<Omit<Ipv6Header, "version">> = fc.record({
  trafficClass: u8,
  flowLabel: fc.nat(0xfffff),
  payloadLength: u16,
  nextHeader: fc.oneof(fc.constantFrom(6, 17, 58), u8),
  hopLimit: u8,
  source: ipv6Bytes,
  destination: ipv6Bytes,
});

/** Kinds and lengths that decode as unknown options (the known kinds with other lengths too). */
export const unknownOption = fc.oneof(
  fc.record({
    kind: fc.integer({ min: 5, max: 255 }).filter((k) => k !== 8),
    data: fc.uint8Array({ maxLength: 12 }),
  }),
  fc.record({
    kind: fc.constant(2),
    data: fc.uint8Array({ maxLength: 6 }).filter((d) => d.length !== 2),
  }),
  fc.record({
    kind: fc.constant(3),
    data: fc.uint8Array({ maxLength: 6 }).filter((d) => d.length !== 1),
  }),
  fc.record({
    kind: fc.constant(8),
    data: fc.uint8Array({ maxLength: 10 }).filter((d) => d.length !== 8),
  }),
);

/** Any mix of the options punchd understands and unknown ones. */
export const tcpOptions: fc.Arbitrary<TcpOptions> = fc.record(
  {
    mss: u16,
    windowScale: fc.nat(14),
    sackPermitted: fc.constant(true),
    timestamp: fc.record({ value: u32, echo: u32 }),
    unknown: fc.array(unknownOption, { minLength: 1, maxLength: 3 }),
  },
  { requiredKeys: [] },
);

/** A source and destination of one family. */
export const addresses = fc.oneof(fc.tuple(ipv4Bytes, ipv4Bytes), fc.tuple(ipv6Bytes, ipv6Bytes));

/** A TCP segment as tcp.encode takes it. */
export const tcpSegment: fc.Arbitrary<Omit<TcpSegment, "checksum">> = fc.record({
  sourcePort: u16,
  destinationPort: u16,
  seq: u32,
  ack: u32,
  flags: u8,
  window: u16,
  urgent: u16,
  options: tcpOptions,
  payload,
});

/** Bytes encodeOptions needs for `o` (Linux SYN layout), to tell a too-long area from a bug. */
export function optionBytes(o: TcpOptions): number {
  let n = o.mss === undefined ? 0 : 4;
  if (o.sackPermitted) n += 2;
  if (o.timestamp !== undefined) n += 10;
  if (!!o.sackPermitted !== (o.timestamp !== undefined)) n += 2;
  if (o.windowScale !== undefined) n += 4;
  for (const u of o.unknown ?? []) n += 2 + u.data.length;
  return Math.ceil(n / 4) * 4;
}

/**
 * Encodes a TCP segment; undefined when the encoder refuses it for one of its
 * two documented reasons (options over 40 bytes in punchd's layout, window
 * scale over 14 that RFC 7323 forbids sending).
 */
export function encodeTcp(
  s: Omit<TcpSegment, "checksum">,
  source: Uint8Array,
  destination: Uint8Array,
): Uint8Array | undefined {
  try {
    return tcp.encode(s, source, destination);
  } catch (error) {
    assert(error instanceof RangeError, String(error));
    const tooLong = optionBytes(s.options) > 40;
    const bigScale = (s.options.windowScale ?? 0) > 14;
    assert(tooLong || bigScale, `encode refused a valid segment: ${error.message}`);
    assert(/^Cannot encode (TCP options|window scale)/.test(error.message), error.message);
    return undefined;
  }
}

/** A UDP datagram as udp.encode takes it. */
export const udpDatagram: fc.Arbitrary<Omit<UdpDatagram, "checksum">> = fc.record({
  sourcePort: u16,
  destinationPort: u16,
  payload,
});

/** An ICMP message as icmp.encode takes it. */
export const icmpMessage: fc.Arbitrary<Omit<IcmpMessage, "checksum">> = fc.record({
  type: u8,
  code: u8,
  rest: fc.uint8Array({ minLength: 4, maxLength: 4 }),
  body: payload,
});

/** An IPv4 or IPv6 packet carrying `body` (checksums right). */
export function wrap(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  body: Uint8Array,
): Uint8Array {
  const header = src.length === 4
    ? ipv4.encode({
      tos: 0,
      totalLength: 20 + body.length,
      id: 1,
      dontFragment: true,
      moreFragments: false,
      fragmentOffset: 0,
      ttl: 64,
      protocol,
      source: src,
      destination: dst,
      options: new Uint8Array(0),
    })
    : ipv6.encode({
      trafficClass: 0,
      flowLabel: 0,
      payloadLength: body.length,
      nextHeader: protocol,
      hopLimit: 64,
      source: src,
      destination: dst,
    });
  const out = new Uint8Array(header.length + body.length);
  out.set(header);
  out.set(body, header.length);
  return out;
}
