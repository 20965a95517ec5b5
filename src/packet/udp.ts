/**
 * UDP datagram codec (RFC 768). Pure: no I/O.
 *
 * @module
 */

import { transportChecksum } from "./checksum.ts";
import { need, view } from "./bytes.ts";
import { PROTO } from "./ip.ts";

/** A UDP datagram. */
export interface UdpDatagram {
  sourcePort: number;
  destinationPort: number;
  /** As found (decode); encode computes it. */
  checksum: number;
  payload: Uint8Array;
}

/** UDP codec; checksums need the IP addresses (pseudo-header). */
export const udp = {
  /** 8 plus the payload. */
  encodedLength(d: Pick<UdpDatagram, "payload">): number {
    return 8 + d.payload.length;
  },

  /** Encodes the datagram with its checksum (0 is sent as 0xffff). */
  encode(
    d: Omit<UdpDatagram, "checksum">,
    source: Uint8Array,
    destination: Uint8Array,
  ): Uint8Array {
    const length = 8 + d.payload.length;
    if (length > 0xffff) throw new RangeError(`Cannot encode UDP datagram of ${length} bytes`);
    const out = new Uint8Array(length);
    const dv = view(out);
    dv.setUint16(0, d.sourcePort);
    dv.setUint16(2, d.destinationPort);
    dv.setUint16(4, length);
    out.set(d.payload, 8);
    const sum = transportChecksum(source, destination, PROTO.UDP, out);
    dv.setUint16(6, sum === 0 ? 0xffff : sum);
    return out;
  },

  /**
   * True when the checksum of `datagram` (exactly its length field's bytes) is
   * right for these addresses; 0 means "none" over IPv4 and is wrong over IPv6.
   */
  verify(datagram: Uint8Array, source: Uint8Array, destination: Uint8Array): boolean {
    if (datagram.length >= 8 && datagram[6] === 0 && datagram[7] === 0) return source.length === 4;
    return transportChecksum(source, destination, PROTO.UDP, datagram) === 0;
  },

  /** Decodes a datagram; its length field must fit the buffer. */
  decode(buf: Uint8Array): { value: UdpDatagram; bytesRead: number } {
    need(buf, 8, "UDP header");
    const dv = view(buf);
    const length = dv.getUint16(4);
    if (length < 8 || length > buf.length) {
      throw new RangeError(`Cannot decode UDP datagram: length ${length} with ${buf.length} bytes`);
    }
    return {
      value: {
        sourcePort: dv.getUint16(0),
        destinationPort: dv.getUint16(2),
        checksum: dv.getUint16(6),
        payload: buf.slice(8, length),
      },
      bytesRead: length,
    };
  },
};
