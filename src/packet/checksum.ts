/**
 * The Internet checksum (RFC 1071) and the pseudo-headers of TCP and UDP
 * over IPv4 (RFC 793) and IPv6 (RFC 8200 section 8.1).
 *
 * @module
 */

/** Adds 16-bit big-endian words of `data` to `sum` (an odd last byte is padded with zero). */
export function sumWords(data: Uint8Array, sum = 0): number {
  let i = 0;
  for (; i + 1 < data.length; i += 2) sum += ((data[i] ?? 0) << 8) | (data[i + 1] ?? 0);
  if (i < data.length) sum += (data[i] ?? 0) << 8;
  return sum;
}

/** Folds a running sum to 16 bits and complements it. */
export function finish(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return (~sum) & 0xffff;
}

/** The Internet checksum of `data`. */
export function internetChecksum(data: Uint8Array): number {
  return finish(sumWords(data));
}

/** The pseudo-header sum for a transport segment of `length` bytes and protocol `protocol`. */
export function pseudoHeaderSum(
  source: Uint8Array,
  destination: Uint8Array,
  protocol: number,
  length: number,
): number {
  if (source.length !== destination.length || (source.length !== 4 && source.length !== 16)) {
    throw new TypeError("Cannot build pseudo-header: addresses must both be IPv4 or both IPv6");
  }
  let sum = sumWords(source) + sumWords(destination);
  if (source.length === 4) return sum + protocol + length;
  // IPv6: 32-bit upper-layer length, 24 zero bits, next header.
  sum += Math.floor(length / 0x10000) + (length & 0xffff);
  return sum + protocol;
}

/** The checksum of a TCP or UDP segment (with its checksum field zeroed) over the pseudo-header. */
export function transportChecksum(
  source: Uint8Array,
  destination: Uint8Array,
  protocol: number,
  segment: Uint8Array,
): number {
  return finish(pseudoHeaderSum(source, destination, protocol, segment.length) + sumWords(segment));
}
