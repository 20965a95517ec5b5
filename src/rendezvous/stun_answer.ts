/**
 * The rendezvous server's STUN side (RFC 8489): its probe ports (UDP and
 * TCP) and its main UDP port answer Binding requests with the endpoint they
 * came from, so punchd's `--probe` and any standard STUN client use the
 * same server. Pure: bytes in, bytes out.
 *
 * | request                                              | answer                                       |
 * | ---------------------------------------------------- | -------------------------------------------- |
 * | Binding                                              | success: XOR-MAPPED-ADDRESS, MAPPED-ADDRESS,  |
 * |                                                      | RESPONSE-ORIGIN, SOFTWARE, FINGERPRINT        |
 * | Binding with an unknown comprehension-required attr. | 420 with UNKNOWN-ATTRIBUTES                  |
 * | Binding with CHANGE-REQUEST (no second address here) | 420 (RFC 5780: no OTHER-ADDRESS is offered)  |
 * | another method                                       | 400                                          |
 * | an indication, a response, anything not STUN        | nothing                                      |
 * | RFC 3489 Binding (no magic cookie: old clients such  | MAPPED-ADDRESS, SOURCE-ADDRESS (RFC 3489     |
 * | as Debian's `stun`)                                  | §11.2.1); a change request gets no answer    |
 *
 * An answer is about 80 bytes for a 20-byte request; the UDP side answers
 * each source address a bounded number of times per second (see
 * `udp_server.ts`), so a spoofed source gains little from it as a
 * reflector.
 *
 * @module
 */

import type { InetAddress } from "../../ffi/structs.ts";
import {
  ATTR,
  decode,
  encode,
  encodeAddress,
  encodeErrorCode,
  encodeText,
  encodeXorAddress,
  MAGIC_COOKIE,
  METHOD,
  type StunAttribute,
  type StunMessage,
} from "../stun/message.ts";

/** SOFTWARE of every answer. */
export const SOFTWARE = "punchd-rendezvous";

/** Comprehension-required attributes a Binding request may carry here. */
const UNDERSTOOD = new Set<number>([
  ATTR.MAPPED_ADDRESS,
  ATTR.USERNAME,
  ATTR.MESSAGE_INTEGRITY,
  ATTR.MESSAGE_INTEGRITY_SHA256,
  ATTR.XOR_MAPPED_ADDRESS,
  ATTR.PADDING,
  ATTR.RESPONSE_PORT,
]);

function reply(
  request: StunMessage,
  klass: "success" | "error",
  attributes: StunAttribute[],
): Uint8Array {
  return encode({
    method: request.method,
    class: klass,
    transactionId: request.transactionId,
    attributes: [...attributes, { type: ATTR.SOFTWARE, value: encodeText(SOFTWARE) }],
  }, { fingerprint: true });
}

function error(request: StunMessage, code: number, reason: string, extra: StunAttribute[] = []) {
  return reply(request, "error", [
    { type: ATTR.ERROR_CODE, value: encodeErrorCode(code, reason) },
    ...extra,
  ]);
}

/**
 * The answer to the STUN message `bytes` that arrived from `from` at
 * `local`, or null when nothing is to be sent (not STUN, not a request).
 */
export function stunAnswer(
  bytes: Uint8Array,
  from: InetAddress,
  local: InetAddress,
): Uint8Array | null {
  let request: StunMessage;
  try {
    request = decode(bytes).message;
  } catch {
    return null;
  }
  if (request.class !== "request") return null;
  if (request.method !== METHOD.binding) return error(request, 400, "Bad Request");
  const unknown = request.attributes
    .map((a) => a.type)
    .filter((type) => type < 0x8000 && !UNDERSTOOD.has(type));
  if (unknown.length > 0) {
    const list = new Uint8Array(2 * Math.min(unknown.length, 16));
    const view = new DataView(list.buffer);
    unknown.slice(0, 16).forEach((type, i) => view.setUint16(2 * i, type));
    return error(request, 420, "Unknown Attribute", [{
      type: ATTR.UNKNOWN_ATTRIBUTES,
      value: list,
    }]);
  }
  return reply(request, "success", [
    { type: ATTR.XOR_MAPPED_ADDRESS, value: encodeXorAddress(from, request.transactionId) },
    { type: ATTR.MAPPED_ADDRESS, value: encodeAddress(from) },
    { type: ATTR.RESPONSE_ORIGIN, value: encodeAddress(local) },
  ]);
}

/** RFC 3489 attribute types the classic answer uses. */
const SOURCE_ADDRESS = 0x0004;

/**
 * True when `bytes` is an RFC 3489 Binding request: type 0x0001, a length
 * that matches the datagram, and no magic cookie (RFC 5389 and later
 * clients always send it).
 */
export function isClassicBinding(bytes: Uint8Array): boolean {
  if (bytes.length < 20 || bytes[0] !== 0x00 || bytes[1] !== 0x01) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = view.getUint16(2);
  return (length & 3) === 0 && 20 + length === bytes.length && view.getUint32(4) !== MAGIC_COOKIE;
}

/**
 * The RFC 3489 answer to a classic Binding request (see
 * {@linkcode isClassicBinding}): a Binding Response with the request's
 * 128-bit transaction ID, MAPPED-ADDRESS and SOURCE-ADDRESS. A request that
 * asks for an answer from another address or port (CHANGE-REQUEST with a
 * flag set) gets none: this server has no second address, and RFC 3489
 * clients read silence as "not possible".
 */
export function classicAnswer(
  bytes: Uint8Array,
  from: InetAddress,
  local: InetAddress,
): Uint8Array | null {
  if (!isClassicBinding(bytes)) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 20; at + 4 <= bytes.length;) {
    const type = view.getUint16(at);
    const length = view.getUint16(at + 2);
    if (at + 4 + length > bytes.length) return null;
    if (type === ATTR.CHANGE_REQUEST && length === 4 && (view.getUint32(at + 4) & 0x06) !== 0) {
      return null;
    }
    at += 4 + ((length + 3) & ~3);
  }
  const attributes = [
    { type: ATTR.MAPPED_ADDRESS, value: encodeAddress(from) },
    { type: SOURCE_ADDRESS, value: encodeAddress(local) },
  ];
  const body = attributes.reduce((n, a) => n + 4 + a.value.length, 0);
  const out = new Uint8Array(20 + body);
  const w = new DataView(out.buffer);
  w.setUint16(0, 0x0101);
  w.setUint16(2, body);
  out.set(bytes.subarray(4, 20), 4);
  let at = 20;
  for (const a of attributes) {
    w.setUint16(at, a.type);
    w.setUint16(at + 2, a.value.length);
    out.set(a.value, at + 4);
    at += 4 + a.value.length;
  }
  return out;
}
