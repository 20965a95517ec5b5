/**
 * The `udp` punch datagram (version 2) and the rule that accepts one.
 *
 * A punch proves that its sender holds the attempt's token without showing
 * it: the token (16 random bytes from the initiator, carried to the
 * responder only through the application's rendezvous channel) keys an
 * HMAC-SHA256 over the punch, as ICE keys STUN's MESSAGE-INTEGRITY. 42
 * bytes, integers big-endian:
 *
 * ```
 * offset size field
 *  0      4   MAGIC  "PDU2" (magic and version)
 *  4      1   ROLE   "I" (0x49) initiator or "R" (0x52) responder
 *  5      1   FLAGS  bit 0 SEEN: the sender has received the other's punch;
 *                    bit 1 LAST (only with SEEN): the sender's last punch of the attempt,
 *                    it has stopped sending; other bits 0
 *  6      8   NONCE  the sender's random nonce, one per side and attempt
 * 14      8   ECHO   with SEEN, the NONCE of the other's punch it received; else zeros
 * 22      4   COUNT  the sender's punch number in this attempt (no two punches are equal)
 * 26     16   MAC    HMAC-SHA256(TOKEN, "punchd udp PDU2" 0x00 LEN ADDR, bytes 0-25)
 *                    truncated to 16 bytes; ADDR is the responder's address as the
 *                    initiator punches it (its DST_IP, 4 or 16 bytes; LEN its length),
 *                    which the initiator's progress data tells the responder
 * ```
 *
 * A receiver accepts a punch only when all of these hold, checked in this
 * order (the first that fails names the rejection):
 * 1. 42 bytes, MAGIC, ROLE `I` or `R`, FLAGS none, SEEN, or SEEN and LAST
 *    ("not a punch": an unknown bit, or LAST without SEEN);
 * 2. it came from the peer's address: DST_IP and one of DST_PORTS, or any
 *    port of DST_IP while birthday probing sends to random ports ("wrong address";
 *    "wrong port" instead when it came from DST_IP and passes 3 and 4: a real
 *    punch of the peer's whose NAT gave its flow another port);
 * 3. the MAC matches, compared in constant time ("forged");
 * 4. ROLE is the peer's, not the receiver's own ("reflected").
 * So a punch replayed from any other address is refused, whoever captured it,
 * and one with any field changed fails its MAC: FLAGS is signed, so a
 * forged LAST cannot end the other side's wait for the real one. Proof of
 * receipt is ECHO: a side counts its punch as received only when a SEEN
 * punch echoes its NONCE.
 *
 * LAST was added after the first PDU2 punchd (with MAGIC unchanged: an
 * older side treats a LAST punch as the other application's first
 * datagram, see `udp.ts` on mixing versions).
 *
 * @module
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import { parseIp } from "../../ffi/ip.ts";
import type { SocketAddress } from "../../ffi/structs.ts";
import type { PayloadField } from "../packet/bpf.ts";

/** First bytes of every punch datagram (magic and version). */
export const PUNCH_MAGIC = "PDU2";
/** Bytes of a punch datagram. */
export const PUNCH_LENGTH = 42;
/** Bytes of the token that keys the MAC. */
export const TOKEN_LENGTH = 16;
/** Bytes of a nonce. */
export const NONCE_LENGTH = 8;
/** Bytes of the truncated MAC. */
export const MAC_LENGTH = 16;

const MAGIC = new TextEncoder().encode(PUNCH_MAGIC);
const SIGNED = PUNCH_LENGTH - MAC_LENGTH;
const FLAG_SEEN = 1;
const FLAG_LAST = 2;
/** The FLAGS bytes a punch may carry: none, SEEN, SEEN and LAST. */
const VALID_FLAGS: ReadonlySet<number> = new Set([0, FLAG_SEEN, FLAG_SEEN | FLAG_LAST]);
const ROLE_BYTES = { I: 0x49, R: 0x52 } as const;
const LABEL = new TextEncoder().encode("punchd udp PDU2\0");

/** Which side sent a punch. */
export type PunchRole = "I" | "R";

/** A punch's fields. */
export interface Punch {
  role: PunchRole;
  /** The sender has received the other's punch (ECHO carries its nonce). */
  seen: boolean;
  /** The sender's nonce (8 bytes). */
  nonce: Uint8Array;
  /** The sender's last punch: it has stopped sending (only with `seen`). */
  last: boolean;
  /** The other's nonce when `seen`, else 8 zero bytes. */
  echo: Uint8Array;
  /** The sender's punch number, 0 to 2^32-1. */
  count: number;
}

/** Why a datagram was not accepted as the peer's punch. */
export type PunchRejection =
  | "not a punch"
  | "wrong address"
  | "wrong port"
  | "forged"
  | "reflected";

/** The secret and the addressing every punch of one attempt is bound to. */
export class PunchKey {
  readonly #token: Uint8Array;
  readonly #context: Uint8Array;

  /**
   * `token`: the attempt's 16 token bytes. `responderIp`: the responder's
   * address as the initiator punches it (the initiator's DST_IP).
   */
  constructor(token: Uint8Array, responderIp: string) {
    if (token.length !== TOKEN_LENGTH) {
      throw new RangeError(`Cannot use a token of ${token.length} bytes: expected ${TOKEN_LENGTH}`);
    }
    const ip = parseIp(responderIp);
    this.#token = token.slice();
    this.#context = new Uint8Array([...LABEL, ip.length, ...ip]);
  }

  /** The truncated MAC of a punch's first 26 bytes. */
  mac(signed: Uint8Array): Uint8Array {
    const full = createHmac("sha256", this.#token).update(this.#context).update(signed).digest();
    return new Uint8Array(full.buffer, full.byteOffset, MAC_LENGTH);
  }
}

/** Encodes and signs a punch. */
export function encodePunch(p: Punch, key: PunchKey): Uint8Array<ArrayBuffer> {
  if (p.nonce.length !== NONCE_LENGTH || p.echo.length !== NONCE_LENGTH) {
    throw new RangeError(`Cannot encode punch: nonce and echo must be ${NONCE_LENGTH} bytes`);
  }
  if (!Number.isInteger(p.count) || p.count < 0 || p.count > 0xffffffff) {
    throw new RangeError(`Cannot encode punch: count ${p.count} out of range 0..2^32-1`);
  }
  if (p.last && !p.seen) throw new RangeError("Cannot encode punch: LAST needs SEEN");
  const out = new Uint8Array(PUNCH_LENGTH);
  out.set(MAGIC, 0);
  out[4] = ROLE_BYTES[p.role];
  out[5] = (p.seen ? FLAG_SEEN : 0) | (p.last ? FLAG_LAST : 0);
  out.set(p.nonce, 6);
  out.set(p.echo, 14);
  new DataView(out.buffer).setUint32(22, p.count, false);
  out.set(key.mac(out.subarray(0, SIGNED)), SIGNED);
  return out;
}

/** True when `bytes` has a punch's shape (length, magic, role, flags); says nothing of its MAC. */
export function isPunchShaped(bytes: Uint8Array): boolean {
  if (bytes.length !== PUNCH_LENGTH) return false;
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) return false;
  return (bytes[4] === ROLE_BYTES.I || bytes[4] === ROLE_BYTES.R) &&
    VALID_FLAGS.has(bytes[5] ?? -1);
}

/**
 * Decodes a punch and verifies its MAC (in constant time); a rejection for
 * a datagram of another shape or with a MAC that does not match.
 */
export function decodePunch(
  bytes: Uint8Array,
  key: PunchKey,
): Punch | "not a punch" | "forged" {
  if (!isPunchShaped(bytes)) return "not a punch";
  const expected = key.mac(bytes.subarray(0, SIGNED));
  if (!timingSafeEqual(expected, bytes.subarray(SIGNED, PUNCH_LENGTH))) return "forged";
  return {
    role: bytes[4] === ROLE_BYTES.I ? "I" : "R",
    seen: ((bytes[5] ?? 0) & FLAG_SEEN) !== 0,
    last: ((bytes[5] ?? 0) & FLAG_LAST) !== 0,
    nonce: bytes.slice(6, 14),
    echo: bytes.slice(14, 22),
    count: new DataView(bytes.buffer, bytes.byteOffset + 22, 4).getUint32(0, false),
  };
}

/** Where the peer's punches may come from. */
export interface PeerAddressing {
  /** The peer's address (canonical text, as `inetAddress` gives it). */
  ip: string;
  /** Its ports (DST_PORTS). */
  ports: readonly number[];
  /** Any port of `ip` (only while birthday probing sends to random ports). */
  anyPort: boolean;
}

/** Whether `from` is one of the addresses the peer's punches may come from, or its address at another port. */
function fromPeer(from: SocketAddress, peer: PeerAddressing): "yes" | "other port" | "no" {
  if (from.family === "unix" || from.address !== peer.ip) return "no";
  return peer.anyPort || peer.ports.includes(from.port) ? "yes" : "other port";
}

/**
 * Accepts a datagram as the peer's punch, or names why not: shape, then
 * source address, then MAC, then role (see the module's list).
 */
export function acceptPunch(
  bytes: Uint8Array,
  from: SocketAddress,
  own: { key: PunchKey; role: PunchRole; peer: PeerAddressing },
): Punch | PunchRejection {
  if (!isPunchShaped(bytes)) return "not a punch";
  const where = fromPeer(from, own.peer);
  if (where === "no") return "wrong address";
  const punch = decodePunch(bytes, own.key);
  if (where === "other port") {
    return typeof punch !== "string" && punch.role !== own.role ? "wrong port" : "wrong address";
  }
  if (typeof punch === "string") return punch;
  return punch.role === own.role ? "reflected" : punch;
}

/** True when two nonces are equal (nonces are public; no constant time needed). */
export function sameNonce(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * The payload fields that single out the punches of one sender in one
 * attempt (magic, its ROLE and its NONCE): a socket filter built from them
 * (packet/bpf.ts udpDropProgram, {@linkcode PUNCH_LENGTH} bytes) drops the
 * peer's late punches before they reach the application, and nothing else
 * but a datagram of exactly that length that repeats 13 of the peer's
 * bytes, 8 of them random for this attempt.
 */
export function punchFields(role: PunchRole, nonce: Uint8Array): PayloadField[] {
  if (nonce.length !== NONCE_LENGTH) {
    throw new RangeError(`Cannot build punch fields: a nonce is ${NONCE_LENGTH} bytes`);
  }
  const head = new Uint8Array(MAGIC.length + 1);
  head.set(MAGIC);
  head[MAGIC.length] = ROLE_BYTES[role];
  return [{ offset: 0, bytes: head }, { offset: 6, bytes: nonce.slice() }];
}
