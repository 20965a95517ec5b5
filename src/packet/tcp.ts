/**
 * TCP segment codec (RFC 9293) with the options punchd negotiates: MSS,
 * window scale (RFC 7323), SACK permitted (RFC 2018) and timestamps
 * (RFC 7323). Unknown options are kept by their length byte. Pure: no I/O.
 *
 * @module
 */

import { transportChecksum } from "./checksum.ts";
import { need, view } from "./bytes.ts";
import { PROTO } from "./ip.ts";

/** TCP flag bits. */
export const FLAGS = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

/** Option kinds. */
export const OPTION = {
  EOL: 0,
  NOP: 1,
  MSS: 2,
  WINDOW_SCALE: 3,
  SACK_PERMITTED: 4,
  SACK: 5,
  TIMESTAMP: 8,
} as const;

/** TCP options punchd understands, plus the ones it keeps unparsed. */
export interface TcpOptions {
  mss?: number;
  windowScale?: number;
  sackPermitted?: boolean;
  timestamp?: { value: number; echo: number };
  /** Options of other kinds, in order, with their data. */
  unknown?: { kind: number; data: Uint8Array }[];
}

/** A TCP segment. */
export interface TcpSegment {
  sourcePort: number;
  destinationPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  urgent: number;
  /** As found in the segment (decode); encode computes it. */
  checksum: number;
  options: TcpOptions;
  payload: Uint8Array;
}

/** Encodes options in Linux's SYN order (MSS, SACK_PERM, TS, NOP, WS), padded to 4 bytes. */
export function encodeOptions(options: TcpOptions): Uint8Array {
  const bytes: number[] = [];
  if (options.mss !== undefined) bytes.push(OPTION.MSS, 4, options.mss >> 8, options.mss & 0xff);
  if (options.sackPermitted) {
    if (options.timestamp === undefined) bytes.push(OPTION.NOP, OPTION.NOP);
    bytes.push(OPTION.SACK_PERMITTED, 2);
  }
  if (options.timestamp !== undefined) {
    if (!options.sackPermitted) bytes.push(OPTION.NOP, OPTION.NOP);
    const ts = new Uint8Array(8);
    view(ts).setUint32(0, options.timestamp.value >>> 0);
    view(ts).setUint32(4, options.timestamp.echo >>> 0);
    bytes.push(OPTION.TIMESTAMP, 10, ...ts);
  }
  if (options.windowScale !== undefined) {
    if (options.windowScale > 14) {
      throw new RangeError(`Cannot encode window scale ${options.windowScale}: at most 14`);
    }
    bytes.push(OPTION.NOP, OPTION.WINDOW_SCALE, 3, options.windowScale);
  }
  for (const u of options.unknown ?? []) bytes.push(u.kind, u.data.length + 2, ...u.data);
  while (bytes.length % 4 !== 0) bytes.push(OPTION.EOL);
  if (bytes.length > 40) {
    throw new RangeError(`Cannot encode TCP options: ${bytes.length} bytes, at most 40`);
  }
  return new Uint8Array(bytes);
}

/** Decodes the options area; throws on an option that runs past the end. */
export function decodeOptions(buf: Uint8Array): TcpOptions {
  const options: TcpOptions = {};
  let i = 0;
  while (i < buf.length) {
    const kind = buf[i] ?? 0;
    if (kind === OPTION.EOL) break;
    if (kind === OPTION.NOP) {
      i++;
      continue;
    }
    const length = buf[i + 1];
    if (length === undefined || length < 2 || i + length > buf.length) {
      throw new RangeError(`Cannot decode TCP option ${kind} at ${i}: bad length ${length}`);
    }
    const data = buf.subarray(i + 2, i + length);
    const dv = view(data);
    if (kind === OPTION.MSS && length === 4) options.mss = dv.getUint16(0);
    else if (kind === OPTION.WINDOW_SCALE && length === 3) options.windowScale = data[0] ?? 0;
    else if (kind === OPTION.SACK_PERMITTED && length === 2) options.sackPermitted = true;
    else if (kind === OPTION.TIMESTAMP && length === 10) {
      options.timestamp = { value: dv.getUint32(0), echo: dv.getUint32(4) };
    } else (options.unknown ??= []).push({ kind, data: data.slice() });
    i += length;
  }
  return options;
}

/** TCP segment codec; checksums need the IP addresses (pseudo-header). */
export const tcp = {
  /** Bytes the segment takes: header, options and payload. */
  encodedLength(segment: Pick<TcpSegment, "options" | "payload">): number {
    return 20 + encodeOptions(segment.options).length + segment.payload.length;
  },

  /** Encodes the segment with its checksum over the pseudo-header of `source` and `destination`. */
  encode(
    segment: Omit<TcpSegment, "checksum">,
    source: Uint8Array,
    destination: Uint8Array,
  ): Uint8Array {
    const options = encodeOptions(segment.options);
    const headerLength = 20 + options.length;
    const out = new Uint8Array(headerLength + segment.payload.length);
    const dv = view(out);
    dv.setUint16(0, segment.sourcePort);
    dv.setUint16(2, segment.destinationPort);
    dv.setUint32(4, segment.seq >>> 0);
    dv.setUint32(8, segment.ack >>> 0);
    out[12] = (headerLength / 4) << 4;
    out[13] = segment.flags;
    dv.setUint16(14, segment.window);
    dv.setUint16(18, segment.urgent);
    out.set(options, 20);
    out.set(segment.payload, headerLength);
    dv.setUint16(16, transportChecksum(source, destination, PROTO.TCP, out));
    return out;
  },

  /** Decodes a segment (the whole rest of the IP payload). */
  decode(buf: Uint8Array): { value: TcpSegment; bytesRead: number } {
    need(buf, 20, "TCP header");
    const headerLength = ((buf[12] ?? 0) >> 4) * 4;
    if (headerLength < 20) {
      throw new RangeError(`Cannot decode TCP header: data offset ${headerLength / 4} is below 5`);
    }
    need(buf, headerLength, "TCP header with options");
    const dv = view(buf);
    return {
      value: {
        sourcePort: dv.getUint16(0),
        destinationPort: dv.getUint16(2),
        seq: dv.getUint32(4),
        ack: dv.getUint32(8),
        flags: buf[13] ?? 0,
        window: dv.getUint16(14),
        checksum: dv.getUint16(16),
        urgent: dv.getUint16(18),
        options: decodeOptions(buf.subarray(20, headerLength)),
        payload: buf.slice(headerLength),
      },
      bytesRead: buf.length,
    };
  },

  /** True when the segment's checksum is right for these addresses. */
  verify(segment: Uint8Array, source: Uint8Array, destination: Uint8Array): boolean {
    return transportChecksum(source, destination, PROTO.TCP, segment) === 0;
  },
};
