/**
 * Agreement on success for the TCP techniques: before either side hands
 * its socket to the application, both prove over the new connection itself
 * that they are the two ends of this attempt.
 *
 * The initiator draws a random attempt token (16 bytes, 32 lowercase hex
 * digits) and sends it inside its first progress data, which only travels
 * the applications' own channel. When the connection forms, three
 * messages of 16 bytes cross it, each HMAC-SHA256(token, LABEL) cut to its
 * first 16 bytes, LABEL being `punchd-confirm-1|T|` and the message's name
 * (T: the technique's name, e.g. `tcp-nutss`):
 *
 * ```
 *  initiator                                  responder
 *  ───────────── "initiator" ───────────────►  checks it
 *  checks it  ◄─────────── "responder" ──────
 *  ───────────── "initiator-done" ──────────►  checks it
 *  ok (once written)                           ok
 * ```
 *
 * Each side writes its next message only after the previous one checked
 * out, and reads exactly 16 bytes at a time (what follows belongs to the
 * application). A wrong message, the end of the stream or silence past the
 * deadline fails the attempt: the socket is closed (a FIN) and never handed
 * over. An off-path attacker who made a socket connect to something else (a
 * forged handshake) cannot produce the peer's messages without the token,
 * and the names in the MAC stop reflected or replayed ones.
 *
 * When the responder reports ok, it knows both directions carried data and
 * that the initiator accepted its confirmation. No exchange makes both
 * sides sure at once (the two generals): the last message may be lost. The
 * only split outcome left is an initiator that reported ok and a responder
 * that never got "initiator-done"; the responder then closes its socket,
 * and its FIN travels the direction that just carried "responder", so the
 * initiator's application reads the end of the stream before any data: the
 * failure reaches the application that got its socket early.
 *
 * The MAC covers the token, the technique and the message's name, not the
 * attempt's addresses: behind NATs neither side knows the addresses the
 * other one sees, so there is no common view of them to sign. The token is
 * fresh for every attempt and is known only to the two applications that
 * exchanged it, so it names this attempt and this peer already.
 *
 * @module
 */

import { createHmac } from "node:crypto";
import type { Socket } from "../../ffi/socket.ts";
import { TechniqueError } from "../errors.ts";

/** Bytes of a confirmation on the wire. */
export const CONFIRMATION_BYTES = 16;
/** Bytes of an attempt token. */
const TOKEN_BYTES = 16;
/** An attempt token as it travels in progress data. */
const TOKEN_PATTERN = /^[0-9a-f]{32}$/;

/** Which end of the attempt a side is. */
export type ConfirmRole = "initiator" | "responder";

/** The three messages, in order: who writes each is in its name. */
export const CONFIRM_MESSAGES = ["initiator", "responder", "initiator-done"] as const;
/** One of {@linkcode CONFIRM_MESSAGES}. */
export type ConfirmMessage = typeof CONFIRM_MESSAGES[number];

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

/**
 * The 16 bytes of message `name` for an attempt of `technique` with `token`.
 * Synchronous (node:crypto): the three messages are ready the moment the
 * connection forms, with no trip through WebCrypto's promises on the way.
 */
export function confirmation(
  token: string,
  technique: string,
  name: ConfirmMessage,
): Uint8Array<ArrayBuffer> {
  const mac = createHmac("sha256", tokenBytes(token))
    .update(`punchd-confirm-1|${technique}|${name}`)
    .digest();
  return new Uint8Array(mac.subarray(0, CONFIRMATION_BYTES));
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
  /** Milliseconds the whole exchange may take (default 8000). */
  timeoutMs?: number;
}

/**
 * Runs this side's part of the exchange on `socket` (see the module doc).
 * Throws a TechniqueError ("Cannot confirm the connection: ...") on a wrong
 * message, the end of the stream or the deadline; the signal's reason when
 * it aborts. The caller closes the socket on failure.
 */
export async function confirmPeer(socket: Socket, options: ConfirmOptions): Promise<void> {
  const { token, technique, role, signal } = options;
  const messages = CONFIRM_MESSAGES.map((name) => confirmation(token, technique, name));
  const timeoutMs = options.timeoutMs ?? 8000;
  const deadline = new AbortController();
  const timer = setTimeout(
    () => deadline.abort(new TechniqueError(`no confirmation within ${timeoutMs} ms`)),
    timeoutMs,
  );
  const wait = AbortSignal.any([signal, deadline.signal]);
  const fail = (why: string, cause?: unknown) =>
    new TechniqueError(`Cannot confirm the connection: ${why}`, { cause });
  const check = async (expected: Uint8Array, name: ConfirmMessage) => {
    const got = new Uint8Array(CONFIRMATION_BYTES);
    for (let have = 0; have < got.length;) {
      const part = new Uint8Array(got.length - have);
      const n = await socket.read(part, wait);
      if (n === 0) throw fail(`the peer closed the connection after ${have} bytes of "${name}"`);
      got.set(part.subarray(0, n), have);
      have += n;
    }
    if (!equalInConstantTime(got, expected)) throw fail(`the peer's "${name}" is wrong`);
  };
  try {
    for (const [i, name] of CONFIRM_MESSAGES.entries()) {
      const message = messages[i] as Uint8Array<ArrayBuffer>;
      if (name.startsWith(role)) await socket.write(message, wait);
      else await check(message, name);
    }
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    if (deadline.signal.aborted) throw fail((deadline.signal.reason as Error).message, error);
    if (error instanceof TechniqueError) throw error;
    throw fail((error as Error).message, error);
  } finally {
    clearTimeout(timer);
  }
}
