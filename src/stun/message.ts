/**
 * STUN messages (RFC 8489), with the attributes of NAT behaviour discovery
 * (RFC 5780) and TURN (RFC 8656, RFC 6062). Pure: no I/O, no logging.
 *
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |0 0|     STUN Message Type     |         Message Length        |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                         Magic Cookie                          |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                     Transaction ID (96 bits)                  |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  then attributes: type (16), length (16), value, padded to 4 bytes
 * ```
 *
 * The message type interleaves the class bits (C1 at bit 8, C0 at bit 4)
 * with the 12-bit method. MESSAGE-INTEGRITY is HMAC-SHA1 over the message
 * up to the attribute, with the length field counting through it;
 * FINGERPRINT is CRC-32 of everything before it XOR 0x5354554e, with the
 * length counting through it.
 *
 * @module
 */

import { createHash, createHmac } from "node:crypto";
import { formatIp, parseIp } from "../../ffi/ip.ts";
import { type InetAddress, inetAddress } from "../../ffi/structs.ts";

/** The magic cookie of every RFC 5389/8489 message. */
export const MAGIC_COOKIE = 0x2112a442;
/** Bytes of the header. */
export const HEADER_BYTES = 20;

/** The four message classes. */
export type StunClass = "request" | "indication" | "success" | "error";

/** Methods (RFC 8489, RFC 8656 TURN, RFC 6062 TURN-TCP). */
export const METHOD = {
  binding: 0x001,
  allocate: 0x003,
  refresh: 0x004,
  send: 0x006,
  data: 0x007,
  createPermission: 0x008,
  channelBind: 0x009,
  connect: 0x00a,
  connectionBind: 0x00b,
  connectionAttempt: 0x00c,
} as const;

/** Attribute types. */
export const ATTR = {
  MAPPED_ADDRESS: 0x0001,
  CHANGE_REQUEST: 0x0003,
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  UNKNOWN_ATTRIBUTES: 0x000a,
  CHANNEL_NUMBER: 0x000c,
  LIFETIME: 0x000d,
  XOR_PEER_ADDRESS: 0x0012,
  DATA: 0x0013,
  REALM: 0x0014,
  NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016,
  REQUESTED_ADDRESS_FAMILY: 0x0017,
  REQUESTED_TRANSPORT: 0x0019,
  XOR_MAPPED_ADDRESS: 0x0020,
  PADDING: 0x0026,
  RESPONSE_PORT: 0x0027,
  CONNECTION_ID: 0x002a,
  MESSAGE_INTEGRITY_SHA256: 0x001c,
  PASSWORD_ALGORITHM: 0x001d,
  USERHASH: 0x001e,
  SOFTWARE: 0x8022,
  ALTERNATE_SERVER: 0x8023,
  FINGERPRINT: 0x8028,
  RESPONSE_ORIGIN: 0x802b,
  OTHER_ADDRESS: 0x802c,
} as const;

/** One attribute as it is on the wire (value without padding). */
export interface StunAttribute {
  type: number;
  value: Uint8Array;
}

/** A decoded or to-be-encoded message. */
export interface StunMessage {
  /** 12-bit method. */
  method: number;
  class: StunClass;
  /** Exactly 12 bytes. */
  transactionId: Uint8Array;
  /** In wire order; when encoding, without MESSAGE-INTEGRITY and FINGERPRINT (options add them). */
  attributes: StunAttribute[];
}

/** What `encode` appends. */
export interface EncodeOptions {
  /** Appends MESSAGE-INTEGRITY keyed with this key (short-term: the password; long-term: longTermKey()). */
  integrityKey?: Uint8Array;
  /** Appends FINGERPRINT, after MESSAGE-INTEGRITY. */
  fingerprint?: boolean;
}

const CLASS_BITS: Record<StunClass, number> = {
  request: 0x000,
  indication: 0x010,
  success: 0x100,
  error: 0x110,
};
const FINGERPRINT_XOR = 0x5354554e;
/** The longest value a text attribute may carry (RFC 8489: USERNAME < 513, REALM/NONCE/SOFTWARE < 763). */
const MAX_TEXT_BYTES = 763;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (ISO 3309, as in zlib). */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of bytes) c = (CRC_TABLE[(c ^ byte) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function padded(length: number): number {
  return (length + 3) & ~3;
}

function messageType(method: number, klass: StunClass): number {
  if (!Number.isInteger(method) || method < 0 || method > 0xfff) {
    throw new RangeError(`Cannot encode STUN method ${method}: out of range 0-4095`);
  }
  return (method & 0x00f) | ((method & 0x070) << 1) | ((method & 0xf80) << 2) | CLASS_BITS[klass];
}

/** 20 + attribute bytes (with padding) of encode(message, options). */
export function encodedLength(message: StunMessage, options: EncodeOptions = {}): number {
  let length = HEADER_BYTES;
  for (const a of message.attributes) length += 4 + padded(a.value.length);
  if (options.integrityKey !== undefined) length += 24;
  if (options.fingerprint === true) length += 8;
  return length;
}

/** Encodes `message`, appending MESSAGE-INTEGRITY and FINGERPRINT when asked. */
export function encode(message: StunMessage, options: EncodeOptions = {}): Uint8Array {
  if (message.transactionId.length !== 12) {
    throw new TypeError("Cannot encode STUN: the transaction ID must be 12 bytes");
  }
  const out = new Uint8Array(encodedLength(message, options));
  const view = new DataView(out.buffer);
  view.setUint16(0, messageType(message.method, message.class));
  view.setUint32(4, MAGIC_COOKIE);
  out.set(message.transactionId, 8);
  let at = HEADER_BYTES;
  for (const a of message.attributes) {
    if (!Number.isInteger(a.type) || a.type < 0 || a.type > 0xffff) {
      throw new RangeError(`Cannot encode STUN attribute type ${a.type}`);
    }
    if (a.value.length > 0xffff - 4) throw new RangeError("Cannot encode STUN: attribute too long");
    view.setUint16(at, a.type);
    view.setUint16(at + 2, a.value.length);
    out.set(a.value, at + 4);
    at += 4 + padded(a.value.length);
  }
  if (options.integrityKey !== undefined) {
    view.setUint16(2, at + 24 - HEADER_BYTES);
    const mac = hmacSha1(options.integrityKey, out.subarray(0, at));
    view.setUint16(at, ATTR.MESSAGE_INTEGRITY);
    view.setUint16(at + 2, 20);
    out.set(mac, at + 4);
    at += 24;
  }
  if (options.fingerprint === true) {
    view.setUint16(2, at + 8 - HEADER_BYTES);
    const crc = (crc32(out.subarray(0, at)) ^ FINGERPRINT_XOR) >>> 0;
    view.setUint16(at, ATTR.FINGERPRINT);
    view.setUint16(at + 2, 4);
    view.setUint32(at + 4, crc);
    at += 8;
  }
  view.setUint16(2, at - HEADER_BYTES);
  return out;
}

function hmacSha1(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha1", key).update(data).digest());
}

/** True when `bytes` starts like a STUN message (20 bytes at least, top two bits 0, magic cookie). */
export function looksLikeStun(bytes: Uint8Array): boolean {
  if (bytes.length < HEADER_BYTES || ((bytes[0] ?? 0) & 0xc0) !== 0) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return view.getUint32(4) === MAGIC_COOKIE && (view.getUint16(2) & 3) === 0;
}

/**
 * For stream framing (RFC 8489 §6.2.2): the total length of the message
 * whose header starts `bytes` (20 + length), null when fewer than 20 bytes
 * are there; SyntaxError when they are not a STUN header.
 */
export function frameLength(bytes: Uint8Array): number | null {
  if (bytes.length < HEADER_BYTES) return null;
  if (!looksLikeStun(bytes)) throw new SyntaxError("Cannot frame STUN: not a STUN header");
  return HEADER_BYTES + (((bytes[2] ?? 0) << 8) | (bytes[3] ?? 0));
}

/** Raw bytes of decoded messages, for verifyIntegrity of a message as it was received. */
const RAW = new WeakMap<StunMessage, Uint8Array>();

/**
 * Decodes one message at the start of `bytes`; returns it and the bytes it
 * took (20 + length). Checks the header, every attribute's bounds, and
 * FINGERPRINT when present (it must be last and correct); attributes after
 * MESSAGE-INTEGRITY other than FINGERPRINT are ignored (RFC 8489 §14.5).
 */
export function decode(bytes: Uint8Array): { message: StunMessage; length: number } {
  if (bytes.length < HEADER_BYTES) {
    throw new SyntaxError("Cannot decode STUN: shorter than a header");
  }
  if (((bytes[0] ?? 0) & 0xc0) !== 0) {
    throw new SyntaxError("Cannot decode STUN: not a STUN message");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(4) !== MAGIC_COOKIE) {
    throw new SyntaxError("Cannot decode STUN: no magic cookie");
  }
  const bodyLength = view.getUint16(2);
  if ((bodyLength & 3) !== 0) {
    throw new SyntaxError("Cannot decode STUN: length not a multiple of 4");
  }
  const length = HEADER_BYTES + bodyLength;
  if (length > bytes.length) throw new SyntaxError("Cannot decode STUN: truncated message");
  const type = view.getUint16(0);
  const method = (type & 0x000f) | ((type & 0x00e0) >> 1) | ((type & 0x3e00) >> 2);
  const bits = type & 0x0110;
  const klass = (Object.keys(CLASS_BITS) as StunClass[]).find((k) => CLASS_BITS[k] === bits);
  if (klass === undefined) throw new SyntaxError("Cannot decode STUN: bad class");
  const attributes: StunAttribute[] = [];
  let at = HEADER_BYTES;
  let integrity = false;
  while (at < length) {
    if (at + 4 > length) throw new SyntaxError("Cannot decode STUN: truncated attribute header");
    const attrType = view.getUint16(at);
    const attrLength = view.getUint16(at + 2);
    const end = at + 4 + attrLength;
    if (end > length) throw new SyntaxError("Cannot decode STUN: attribute runs past the message");
    if (at + 4 + padded(attrLength) > length) {
      throw new SyntaxError("Cannot decode STUN: attribute padding runs past the message");
    }
    const value = bytes.slice(at + 4, end);
    if (attrType === ATTR.FINGERPRINT) {
      if (attrLength !== 4) throw new SyntaxError("Cannot decode STUN: bad FINGERPRINT length");
      if (at + 8 !== length) throw new SyntaxError("Cannot decode STUN: FINGERPRINT is not last");
      const expected = (crc32(bytes.subarray(0, at)) ^ FINGERPRINT_XOR) >>> 0;
      if (view.getUint32(at + 4) !== expected) {
        throw new SyntaxError("Cannot decode STUN: wrong FINGERPRINT");
      }
      attributes.push({ type: attrType, value });
    } else if (!integrity || attrType === ATTR.MESSAGE_INTEGRITY_SHA256) {
      if (attrType === ATTR.MESSAGE_INTEGRITY && attrLength !== 20) {
        throw new SyntaxError("Cannot decode STUN: bad MESSAGE-INTEGRITY length");
      }
      attributes.push({ type: attrType, value });
    }
    if (attrType === ATTR.MESSAGE_INTEGRITY) integrity = true;
    at += 4 + padded(attrLength);
  }
  const message: StunMessage = {
    method,
    class: klass,
    transactionId: bytes.slice(8, 20),
    attributes,
  };
  RAW.set(message, bytes.slice(0, length));
  return { message, length };
}

/**
 * Checks MESSAGE-INTEGRITY of `raw` (the message's bytes as received, or a
 * message returned by `decode`) with `key`; false when absent or wrong.
 */
export function verifyIntegrity(raw: Uint8Array | StunMessage, key: Uint8Array): boolean {
  const bytes = raw instanceof Uint8Array ? raw : RAW.get(raw);
  if (bytes === undefined || bytes.length < HEADER_BYTES) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = Math.min(bytes.length, HEADER_BYTES + view.getUint16(2));
  let at = HEADER_BYTES;
  while (at + 4 <= length) {
    const type = view.getUint16(at);
    const attrLength = view.getUint16(at + 2);
    if (type === ATTR.MESSAGE_INTEGRITY) {
      if (attrLength !== 20 || at + 24 > length) return false;
      const copy = bytes.slice(0, at);
      new DataView(copy.buffer).setUint16(2, at + 24 - HEADER_BYTES);
      const mac = hmacSha1(key, copy);
      const got = bytes.subarray(at + 4, at + 24);
      let diff = 0;
      for (let i = 0; i < 20; i++) diff |= (mac[i] ?? 0) ^ (got[i] ?? 0);
      return diff === 0;
    }
    at += 4 + padded(attrLength);
  }
  return false;
}

/**
 * OpaqueString preparation (RFC 8265, as RFC 8489 uses for passwords and
 * user names), the part that matters for real credentials: non-ASCII spaces
 * become U+0020, code points that map to nothing (soft hyphen and the like,
 * RFC 3454 B.1) are removed, and the result is NFC; SASLprep's NFKC is
 * applied too, since older servers (and RFC 5769's vector) expect it.
 */
export function opaqueString(text: string): string {
  const spaces = /[\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000]/g;
  const nothing = /[\u00ad\u034f\u1806\u180b-\u180d\u200c\u200d\u2060\ufe00-\ufe0f\ufeff]/g;
  return text.replace(spaces, " ").replace(nothing, "").normalize("NFKC");
}

/** MD5(username ":" realm ":" password) (the RFC 8489 long-term credential key). */
export function longTermKey(username: string, realm: string, password: string): Uint8Array {
  return new Uint8Array(
    createHash("md5").update(`${username}:${realm}:${opaqueString(password)}`, "utf8").digest(),
  );
}

/** 12 random bytes. */
export function newTransactionId(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(12));
}

/** The first attribute of `type`, or undefined. */
export function attribute(message: StunMessage, type: number): Uint8Array | undefined {
  return message.attributes.find((a) => a.type === type)?.value;
}

const FAMILY = { inet: 0x01, inet6: 0x02 } as const;

/** MAPPED-ADDRESS, OTHER-ADDRESS, RESPONSE-ORIGIN, ALTERNATE-SERVER. */
export function encodeAddress(address: InetAddress): Uint8Array {
  const ip = parseIp(address.address);
  const out = new Uint8Array(4 + ip.length);
  out[1] = ip.length === 4 ? FAMILY.inet : FAMILY.inet6;
  new DataView(out.buffer).setUint16(2, address.port);
  out.set(ip, 4);
  return out;
}

/** Decodes an address attribute; SyntaxError on a bad family or length. */
export function decodeAddress(value: Uint8Array): InetAddress {
  const family = value[1];
  const size = family === FAMILY.inet ? 4 : family === FAMILY.inet6 ? 16 : 0;
  if (size === 0 || value.length !== 4 + size) {
    throw new SyntaxError("Cannot decode STUN address: bad family or length");
  }
  const port = ((value[2] ?? 0) << 8) | (value[3] ?? 0);
  return inetAddress(formatIp(value.slice(4)), port);
}

function xorMask(size: number, transactionId: Uint8Array): Uint8Array {
  const mask = new Uint8Array(size);
  new DataView(mask.buffer).setUint32(0, MAGIC_COOKIE);
  if (size === 16) mask.set(transactionId.subarray(0, 12), 4);
  return mask;
}

/** XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS. */
export function encodeXorAddress(address: InetAddress, transactionId: Uint8Array): Uint8Array {
  const out = encodeAddress(address);
  const mask = xorMask(out.length - 4, transactionId);
  out[2] = (out[2] ?? 0) ^ 0x21;
  out[3] = (out[3] ?? 0) ^ 0x12;
  for (let i = 4; i < out.length; i++) out[i] = (out[i] ?? 0) ^ (mask[i - 4] ?? 0);
  return out;
}

/** Decodes an XOR address attribute; SyntaxError on a bad family or length. */
export function decodeXorAddress(value: Uint8Array, transactionId: Uint8Array): InetAddress {
  const plain = value.slice();
  if (plain.length === 8 || plain.length === 20) {
    const mask = xorMask(plain.length - 4, transactionId);
    plain[2] = (plain[2] ?? 0) ^ 0x21;
    plain[3] = (plain[3] ?? 0) ^ 0x12;
    for (let i = 4; i < plain.length; i++) plain[i] = (plain[i] ?? 0) ^ (mask[i - 4] ?? 0);
  }
  return decodeAddress(plain);
}

/** ERROR-CODE: class and number of `code` (300-699) and a UTF-8 reason. */
export function encodeErrorCode(code: number, reason: string): Uint8Array {
  if (!Number.isInteger(code) || code < 300 || code > 699) {
    throw new RangeError(`Cannot encode STUN error code ${code}: out of range 300-699`);
  }
  const text = encodeText(reason);
  const out = new Uint8Array(4 + text.length);
  out[2] = Math.floor(code / 100);
  out[3] = code % 100;
  out.set(text, 4);
  return out;
}

/** Decodes ERROR-CODE. */
export function decodeErrorCode(value: Uint8Array): { code: number; reason: string } {
  if (value.length < 4) throw new SyntaxError("Cannot decode STUN ERROR-CODE: too short");
  const klass = (value[2] ?? 0) & 0x07;
  const number = value[3] ?? 0;
  if (klass < 3 || klass > 6 || number > 99) {
    throw new SyntaxError("Cannot decode STUN ERROR-CODE: out of range");
  }
  return { code: klass * 100 + number, reason: decodeText(value.subarray(4)) };
}

/** CHANGE-REQUEST (RFC 5780): change IP (0x04) and/or port (0x02). */
export function encodeChangeRequest(change: { ip: boolean; port: boolean }): Uint8Array {
  return encodeUint32((change.ip ? 0x04 : 0) | (change.port ? 0x02 : 0));
}

/** Decodes CHANGE-REQUEST. */
export function decodeChangeRequest(value: Uint8Array): { ip: boolean; port: boolean } {
  const flags = decodeUint32(value);
  return { ip: (flags & 0x04) !== 0, port: (flags & 0x02) !== 0 };
}

/** A 32-bit unsigned value (LIFETIME, CONNECTION-ID, CHANGE-REQUEST). */
export function encodeUint32(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new RangeError(`Cannot encode ${n} as a 32-bit STUN value`);
  }
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

/** Decodes a 32-bit unsigned value. */
export function decodeUint32(value: Uint8Array): number {
  if (value.length !== 4) throw new SyntaxError("Cannot decode a 32-bit STUN value: length not 4");
  return new DataView(value.buffer, value.byteOffset, 4).getUint32(0);
}

/** REQUESTED-TRANSPORT: the IP protocol number (6 TCP, 17 UDP) and 3 reserved bytes. */
export function encodeRequestedTransport(protocol: number): Uint8Array {
  if (protocol !== 6 && protocol !== 17) {
    throw new RangeError(`Cannot request transport ${protocol}: only 6 (TCP) and 17 (UDP)`);
  }
  return new Uint8Array([protocol, 0, 0, 0]);
}

/** USERNAME, REALM, NONCE, SOFTWARE: UTF-8 text. */
export function encodeText(text: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length > MAX_TEXT_BYTES) {
    throw new RangeError(
      `Cannot encode STUN text: ${bytes.length} bytes (at most ${MAX_TEXT_BYTES})`,
    );
  }
  return bytes;
}

/** Decodes UTF-8 text; SyntaxError when it is not UTF-8. */
export function decodeText(value: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(value);
  } catch (error) {
    throw new SyntaxError("Cannot decode STUN text: not UTF-8", { cause: error });
  }
}
