/**
 * ICMP (RFC 792) and ICMPv6 (RFC 4443) codecs, with the quoted packet of
 * error messages such as time exceeded. Pure: no I/O.
 *
 * @module
 */

import { internetChecksum, transportChecksum } from "./checksum.ts";
import { need, view } from "./bytes.ts";
import { ipv4, ipv6, PROTO } from "./ip.ts";

/** ICMP (v4) time exceeded. */
export const ICMP_TIME_EXCEEDED = 11;
/** ICMPv6 time exceeded. */
export const ICMPV6_TIME_EXCEEDED = 3;

/** An ICMP or ICMPv6 message. */
export interface IcmpMessage {
  type: number;
  code: number;
  /** As found (decode); encode computes it. */
  checksum: number;
  /** The 4 bytes after the checksum (unused in time exceeded). */
  rest: Uint8Array;
  /** The body: for error messages, the quoted packet. */
  body: Uint8Array;
}

/** What an error message quotes: the original packet's addresses, protocol and ports. */
export interface QuotedFlow {
  source: Uint8Array;
  destination: Uint8Array;
  protocol: number;
  sourcePort: number;
  destinationPort: number;
  /** The TCP sequence number when the quote has it (TCP, 8 bytes quoted). */
  seq?: number;
}

function encodeMessage(m: Omit<IcmpMessage, "checksum">): Uint8Array {
  if (m.rest.length !== 4) throw new RangeError("Cannot encode ICMP message: rest must be 4 bytes");
  const out = new Uint8Array(8 + m.body.length);
  out[0] = m.type;
  out[1] = m.code;
  out.set(m.rest, 4);
  out.set(m.body, 8);
  return out;
}

function decodeMessage(buf: Uint8Array): { value: IcmpMessage; bytesRead: number } {
  need(buf, 8, "ICMP header");
  return {
    value: {
      type: buf[0] ?? 0,
      code: buf[1] ?? 0,
      checksum: view(buf).getUint16(2),
      rest: buf.slice(4, 8),
      body: buf.slice(8),
    },
    bytesRead: buf.length,
  };
}

/** ICMP (IPv4) codec: the checksum covers the message only. */
export const icmp = {
  /** 8 plus the body. */
  encodedLength(m: Pick<IcmpMessage, "body">): number {
    return 8 + m.body.length;
  },
  /** Encodes with checksum. */
  encode(m: Omit<IcmpMessage, "checksum">): Uint8Array {
    const out = encodeMessage(m);
    view(out).setUint16(2, internetChecksum(out));
    return out;
  },
  /** Decodes a message. */
  decode: decodeMessage,
  /** True when the checksum of the whole `message` is right. */
  verify(message: Uint8Array): boolean {
    return internetChecksum(message) === 0;
  },
};

/** ICMPv6 codec: the checksum covers a pseudo-header too. */
export const icmpv6 = {
  /** 8 plus the body. */
  encodedLength(m: Pick<IcmpMessage, "body">): number {
    return 8 + m.body.length;
  },
  /** Encodes with checksum over the pseudo-header of `source` and `destination`. */
  encode(
    m: Omit<IcmpMessage, "checksum">,
    source: Uint8Array,
    destination: Uint8Array,
  ): Uint8Array {
    const out = encodeMessage(m);
    view(out).setUint16(2, transportChecksum(source, destination, PROTO.ICMPV6, out));
    return out;
  },
  /** Decodes a message. */
  decode: decodeMessage,
  /** True when the checksum of the whole `message` is right for these addresses. */
  verify(message: Uint8Array, source: Uint8Array, destination: Uint8Array): boolean {
    return transportChecksum(source, destination, PROTO.ICMPV6, message) === 0;
  },
};

/** The flow an ICMP/ICMPv6 error quotes (its body: the original IP header and 8+ bytes). */
export function quotedFlow(body: Uint8Array): QuotedFlow {
  need(body, 1, "quoted packet");
  const version = (body[0] ?? 0) >> 4;
  let source: Uint8Array, destination: Uint8Array, protocol: number, offset: number;
  if (version === 4) {
    const { value, bytesRead } = ipv4.decode(body);
    ({ source, destination, protocol } = value);
    offset = bytesRead;
  } else if (version === 6) {
    const { value, bytesRead } = ipv6.decode(body);
    ({ source, destination } = value);
    protocol = value.nextHeader;
    offset = bytesRead;
  } else {
    throw new TypeError(`Cannot decode quoted packet: IP version ${version}`);
  }
  need(body, offset + 4, "quoted transport ports");
  const dv = view(body);
  const flow: QuotedFlow = {
    source,
    destination,
    protocol,
    sourcePort: dv.getUint16(offset),
    destinationPort: dv.getUint16(offset + 2),
  };
  if (protocol === PROTO.TCP && body.length >= offset + 8) flow.seq = dv.getUint32(offset + 4);
  return flow;
}
