/**
 * Agreement on success for the TCP techniques: before either side hands
 * its socket to the application, both prove over the new connection itself
 * that they are the two ends of this attempt.
 *
 * The initiator draws a random attempt token (16 bytes, 32 lowercase hex
 * digits) and sends it inside its first progress data, which only travels
 * the applications' own channel. When its connection forms, each side
 * writes its 16-byte confirmation and reads exactly 16 bytes from the peer:
 *
 * ```
 *  initiator                                   responder
 *  ── HMAC-SHA256(token, "punchd-confirm-1|T|initiator")[0..16] ──►
 *  ◄── HMAC-SHA256(token, "punchd-confirm-1|T|responder")[0..16] ──
 *  (T: the technique's name; both write first, then read: no deadlock)
 * ```
 *
 * A wrong confirmation, the end of the stream or no confirmation within the
 * deadline fails the attempt: the socket is closed (a FIN, so a peer that
 * already confirmed sees the end of the stream) and never handed over. An
 * off-path attacker who made a socket connect to something else (a forged
 * handshake) cannot produce the peer's confirmation without the token, and
 * the role in the MAC stops a reflected confirmation.
 *
 * The MAC covers the token, the technique and the sender's role, not the
 * attempt's addresses: behind NATs neither side knows the addresses the
 * other one sees, so there is no common view of them to sign. The token is
 * fresh for every attempt and is known only to the two applications that
 * exchanged it, so it names this attempt and this peer already.
 *
 * After both confirmations crossed, a side that still fails (its deadline
 * strikes between writing and reading) closes its socket, and the peer's
 * application, which may already hold its socket, reads the end of the
 * stream: the only way left to tell it (the two generals cannot agree in a
 * bounded number of messages).
 *
 * @module
 */

import type { Socket } from "../../ffi/socket.ts";
import { TechniqueError } from "../errors.ts";

/** Bytes of a confirmation on the wire. */
export const CONFIRMATION_BYTES = 16;
/** Bytes of an attempt token. */
const TOKEN_BYTES = 16;
/** An attempt token as it travels in progress data. */
const TOKEN_PATTERN = /^[0-9a-f]{32}$/;

/** Which end of the attempt writes a confirmation. */
export type ConfirmRole = "initiator" | "responder";

/** A new random attempt token: 32 lowercase hex digits. */
export function newAttemptToken(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(TOKEN_BYTES)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** Throws SyntaxError unless `text` is an attempt token (32 lowercase hex digits). */
export function assertAttemptToken(text: string): void {
  if (!TOKEN_PATTERN.test(text)) {
    throw new SyntaxError("bad attempt token (expected 32 lowercase hex digits)");
  }
}

function tokenBytes(token: string): Uint8Array<ArrayBuffer> {
  assertAttemptToken(token);
  const bytes = new Uint8Array(TOKEN_BYTES);
  for (let i = 0; i < TOKEN_BYTES; i++) bytes[i] = parseInt(token.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

/** The confirmation `role` writes for an attempt of `technique` with `token`. */
export async function confirmation(
  token: string,
  technique: string,
  role: ConfirmRole,
): Promise<Uint8Array<ArrayBuffer>> {
  const key = await crypto.subtle.importKey(
    "raw",
    tokenBytes(token),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const text = new TextEncoder().encode(`punchd-confirm-1|${technique}|${role}`);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, text));
  return mac.slice(0, CONFIRMATION_BYTES);
}

function equalInConstantTime(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** Options of {@linkcode confirmPeer}. */
export interface ConfirmOptions {
  token: string;
  technique: string;
  /** This side's role; the peer has the other one. */
  role: ConfirmRole;
  /** Aborts the exchange (the attempt's signal). */
  signal: AbortSignal;
  /** Milliseconds the peer's confirmation may take (default 3000). */
  timeoutMs?: number;
}

/**
 * Writes this side's confirmation on `socket` and reads exactly the peer's
 * (no byte more: what follows belongs to the application). Throws a
 * TechniqueError ("Cannot confirm the connection: ...") on a wrong
 * confirmation, the end of the stream or the deadline; the signal's reason
 * when it aborts. The caller closes the socket on failure.
 */
export async function confirmPeer(socket: Socket, options: ConfirmOptions): Promise<void> {
  const { token, technique, role, signal } = options;
  const peerRole: ConfirmRole = role === "initiator" ? "responder" : "initiator";
  const [mine, theirs] = await Promise.all([
    confirmation(token, technique, role),
    confirmation(token, technique, peerRole),
  ]);
  const timeoutMs = options.timeoutMs ?? 3000;
  const deadline = new AbortController();
  const timer = setTimeout(
    () => deadline.abort(new TechniqueError(`no confirmation within ${timeoutMs} ms`)),
    timeoutMs,
  );
  const wait = AbortSignal.any([signal, deadline.signal]);
  const fail = (why: string, cause?: unknown) =>
    new TechniqueError(`Cannot confirm the connection: ${why}`, { cause });
  try {
    await socket.write(mine, wait);
    const got = new Uint8Array(CONFIRMATION_BYTES);
    for (let have = 0; have < got.length;) {
      const part = new Uint8Array(got.length - have);
      const n = await socket.read(part, wait);
      if (n === 0) throw fail(`the peer closed the connection after ${have} bytes`);
      got.set(part.subarray(0, n), have);
      have += n;
    }
    if (!equalInConstantTime(got, theirs)) throw fail("the peer's confirmation is wrong");
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    if (deadline.signal.aborted) throw fail((deadline.signal.reason as Error).message, error);
    if (error instanceof TechniqueError) throw error;
    throw fail((error as Error).message, error);
  } finally {
    clearTimeout(timer);
  }
}
