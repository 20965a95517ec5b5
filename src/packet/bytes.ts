/**
 * Small helpers shared by the packet codecs.
 *
 * @module
 */

/** A big-endian view of `buf` (network byte order is the DataView default). */
export function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Throws RangeError when `buf` is shorter than `length`. */
export function need(buf: Uint8Array, length: number, what: string): void {
  if (buf.length < length) {
    throw new RangeError(`Cannot decode ${what}: need ${length} bytes, have ${buf.length}`);
  }
}
