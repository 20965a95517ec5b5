/**
 * IPv4 (RFC 791) and IPv6 (RFC 8200) header codecs. Pure: no I/O.
 *
 * @module
 */

import { internetChecksum } from "./checksum.ts";
import { need, view } from "./bytes.ts";

/** IP protocol numbers used by punchd. */
export const PROTO = { ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58 } as const;

/** An IPv4 header. */
export interface Ipv4Header {
  version: 4;
  /** Type of service byte (DSCP and ECN). */
  tos: number;
  /** Total length of the packet, header included. */
  totalLength: number;
  id: number;
  dontFragment: boolean;
  moreFragments: boolean;
  fragmentOffset: number;
  ttl: number;
  protocol: number;
  /** The checksum as found in the packet (decode) or computed (encode ignores this). */
  checksum: number;
  source: Uint8Array;
  destination: Uint8Array;
  /** Options bytes (a multiple of 4; usually empty). */
  options: Uint8Array;
}

/** An IPv6 fixed header. */
export interface Ipv6Header {
  version: 6;
  trafficClass: number;
  flowLabel: number;
  payloadLength: number;
  nextHeader: number;
  hopLimit: number;
  source: Uint8Array;
  destination: Uint8Array;
}

/** IPv4 header codec. */
export const ipv4 = {
  /** Header bytes: 20 plus options. */
  encodedLength(h: Pick<Ipv4Header, "options">): number {
    return 20 + h.options.length;
  },

  /** Encodes the header and computes its checksum. */
  encode(h: Omit<Ipv4Header, "version" | "checksum">): Uint8Array {
    if (h.options.length % 4 !== 0 || h.options.length > 40) {
      throw new RangeError(
        "Cannot encode IPv4 options: length must be a multiple of 4, at most 40",
      );
    }
    if (h.source.length !== 4 || h.destination.length !== 4) {
      throw new TypeError("Cannot encode IPv4 header: addresses must be 4 bytes");
    }
    const length = 20 + h.options.length;
    const out = new Uint8Array(length);
    const dv = view(out);
    out[0] = 0x40 | (length / 4);
    out[1] = h.tos;
    dv.setUint16(2, h.totalLength);
    dv.setUint16(4, h.id);
    dv.setUint16(
      6,
      (h.dontFragment ? 0x4000 : 0) | (h.moreFragments ? 0x2000 : 0) | (h.fragmentOffset & 0x1fff),
    );
    out[8] = h.ttl;
    out[9] = h.protocol;
    out.set(h.source, 12);
    out.set(h.destination, 16);
    out.set(h.options, 20);
    dv.setUint16(10, internetChecksum(out));
    return out;
  },

  /** Decodes a header; `bytesRead` is the header length (the payload follows). */
  decode(buf: Uint8Array): { value: Ipv4Header; bytesRead: number } {
    need(buf, 20, "IPv4 header");
    const version = (buf[0] ?? 0) >> 4;
    if (version !== 4) throw new TypeError(`Cannot decode IPv4 header: version is ${version}`);
    const headerLength = ((buf[0] ?? 0) & 0x0f) * 4;
    if (headerLength < 20) {
      throw new RangeError(`Cannot decode IPv4 header: IHL ${headerLength / 4} is below 5`);
    }
    need(buf, headerLength, "IPv4 header with options");
    const dv = view(buf);
    const totalLength = dv.getUint16(2);
    if (totalLength < headerLength) {
      throw new RangeError(
        `Cannot decode IPv4 header: total length ${totalLength} is shorter than the header`,
      );
    }
    const flags = dv.getUint16(6);
    return {
      value: {
        version: 4,
        tos: buf[1] ?? 0,
        totalLength,
        id: dv.getUint16(4),
        dontFragment: (flags & 0x4000) !== 0,
        moreFragments: (flags & 0x2000) !== 0,
        fragmentOffset: flags & 0x1fff,
        ttl: buf[8] ?? 0,
        protocol: buf[9] ?? 0,
        checksum: dv.getUint16(10),
        source: buf.slice(12, 16),
        destination: buf.slice(16, 20),
        options: buf.slice(20, headerLength),
      },
      bytesRead: headerLength,
    };
  },

  /** True when the header checksum of an encoded header is right. */
  verify(header: Uint8Array): boolean {
    const length = ((header[0] ?? 0) & 0x0f) * 4;
    return header.length >= length && internetChecksum(header.subarray(0, length)) === 0;
  },
};

/** IPv6 fixed header codec (extension headers are not parsed). */
export const ipv6 = {
  /** Always 40. */
  encodedLength(): number {
    return 40;
  },

  /** Encodes the fixed header. */
  encode(h: Omit<Ipv6Header, "version">): Uint8Array {
    if (h.source.length !== 16 || h.destination.length !== 16) {
      throw new TypeError("Cannot encode IPv6 header: addresses must be 16 bytes");
    }
    const out = new Uint8Array(40);
    const dv = view(out);
    dv.setUint32(0, ((6 << 28) | ((h.trafficClass & 0xff) << 20) | (h.flowLabel & 0xfffff)) >>> 0);
    dv.setUint16(4, h.payloadLength);
    out[6] = h.nextHeader;
    out[7] = h.hopLimit;
    out.set(h.source, 8);
    out.set(h.destination, 24);
    return out;
  },

  /** Decodes the fixed header; the payload (or first extension header) follows at 40. */
  decode(buf: Uint8Array): { value: Ipv6Header; bytesRead: number } {
    need(buf, 40, "IPv6 header");
    const dv = view(buf);
    const word = dv.getUint32(0);
    if (word >>> 28 !== 6) {
      throw new TypeError(`Cannot decode IPv6 header: version is ${word >>> 28}`);
    }
    return {
      value: {
        version: 6,
        trafficClass: (word >>> 20) & 0xff,
        flowLabel: word & 0xfffff,
        payloadLength: dv.getUint16(4),
        nextHeader: buf[6] ?? 0,
        hopLimit: buf[7] ?? 0,
        source: buf.slice(8, 24),
        destination: buf.slice(24, 40),
      },
      bytesRead: 40,
    };
  },
};
