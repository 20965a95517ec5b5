/**
 * Who may register an ID at the rendezvous server.
 *
 * - `open` (the default, the protocol as it always was): anyone may register
 *   a free ID. A registration that presents a CREDENTIAL binds the ID to it
 *   (trust on first use): while the binding lasts (while the ID is
 *   registered, and `bindingTtlMs` after), only that credential registers
 *   the ID again. Without a credential an ID stays first come, first served.
 * - `secret`: the server holds a secret; the credential of an ID is
 *   `tokenFor(secret, id)` (HMAC-SHA256, base64url, 43 characters), which the
 *   operator hands to whoever owns the ID. Every registration, TCP or UDP,
 *   must present it. Nothing is stored per ID, so nobody can squat IDs.
 *
 * Credentials travel in clear text (the protocol has no encryption): they
 * stop anyone on the internet from taking an ID, not an eavesdropper on the
 * path, who can replay what it saw. A token is worth one ID only; the
 * secret itself never leaves the server.
 *
 * @module
 */

import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { AddressCounter } from "./limits.ts";

/** The authentication mode. */
export type AuthMode = "open" | "secret";

/** The credential of `id` under `secret`: HMAC-SHA256(secret, id) in base64url. */
export function tokenFor(secret: Uint8Array, id: string): string {
  return createHmac("sha256", secret).update(id).digest("base64url");
}

function digest(text: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(text).digest());
}

function equalDigests(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Options of the policy. */
export interface CredentialOptions {
  mode: AuthMode;
  /** The server secret (mode `secret`), at least 16 bytes. */
  secret?: Uint8Array;
  /** How long a binding outlives its last registration (mode `open`), in ms. */
  bindingTtlMs: number;
  /** Bindings at once (mode `open`). */
  maxBindings: number;
  /** Bindings one source address may hold (mode `open`). */
  maxBindingsPerAddress: number;
}

interface Binding {
  digest: Uint8Array;
  key: string;
  /** Registrations holding the ID now (0 or 1 for TCP). */
  holders: number;
  /** When an unheld binding ends. */
  expires: number;
}

/** Why a registration was refused; the text is the reason sent to the peer. */
export type CredentialRefusal =
  | "credential required"
  | "wrong credential"
  | "too many bound IDs";

/** The registration policy. */
export class CredentialPolicy {
  readonly #options: CredentialOptions;
  readonly #bindings = new Map<string, Binding>();
  readonly #perAddress: AddressCounter;

  /** A policy; throws RangeError for a missing or short secret in mode `secret`. */
  constructor(options: CredentialOptions) {
    if (options.mode === "secret" && (options.secret?.length ?? 0) < 16) {
      throw new RangeError("Cannot use a secret shorter than 16 bytes");
    }
    this.#options = options;
    this.#perAddress = new AddressCounter(options.maxBindingsPerAddress);
  }

  /** The mode. */
  get mode(): AuthMode {
    return this.#options.mode;
  }

  /** Bindings held now (mode `open`). */
  get bindingCount(): number {
    return this.#bindings.size;
  }

  /** True when registering `id` takes a credential (always in mode `secret`). */
  isBound(id: string, now: number): boolean {
    if (this.#options.mode === "secret") return true;
    const binding = this.#bindings.get(id);
    return binding !== undefined && (binding.holders > 0 || binding.expires > now);
  }

  /**
   * Checks a registration of `id` from the address `key` with an optional
   * credential; on success the registration holds the ID until `release()`.
   */
  admit(
    id: string,
    credential: string | undefined,
    key: string,
    now: number,
  ): CredentialRefusal | null {
    if (this.#options.mode === "secret") {
      if (credential === undefined) return "credential required";
      const expected = digest(tokenFor(this.#options.secret ?? new Uint8Array(), id));
      return equalDigests(digest(credential), expected) ? null : "wrong credential";
    }
    let binding = this.#bindings.get(id);
    if (binding !== undefined && binding.holders === 0 && binding.expires <= now) {
      this.#unbind(id, binding);
      binding = undefined;
    }
    if (binding !== undefined) {
      if (credential === undefined) return "credential required";
      if (!equalDigests(digest(credential), binding.digest)) return "wrong credential";
      binding.holders++;
      return null;
    }
    if (credential === undefined) return null;
    // Full until the server's periodic sweep frees unheld, expired bindings.
    if (this.#bindings.size >= this.#options.maxBindings) return "too many bound IDs";
    if (!this.#perAddress.acquire(key)) return "too many bound IDs";
    this.#bindings.set(id, { digest: digest(credential), key, holders: 1, expires: Infinity });
    return null;
  }

  /** A registration admitted by `admit()` ended; its binding lives on for the TTL. */
  release(id: string, now: number): void {
    const binding = this.#bindings.get(id);
    if (binding === undefined) return;
    binding.holders = Math.max(0, binding.holders - 1);
    if (binding.holders === 0) binding.expires = now + this.#options.bindingTtlMs;
  }

  /** Deletes bindings that nobody holds and whose TTL has passed. */
  sweep(now: number): void {
    for (const [id, binding] of this.#bindings) {
      if (binding.holders === 0 && binding.expires <= now) this.#unbind(id, binding);
    }
  }

  #unbind(id: string, binding: Binding): void {
    this.#bindings.delete(id);
    this.#perAddress.release(binding.key);
  }
}
