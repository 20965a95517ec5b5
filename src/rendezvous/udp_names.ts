/**
 * The UDP registrations of the rendezvous server: a name (or session ID)
 * points at the endpoint that registered it until it expires, with a limit
 * on names at once and on names per source address.
 *
 * Expiry is amortized: each name sits in one slot of a timer wheel of
 * `slotMs`-wide slots (the slot its expiry falls in), a keepalive moves it
 * to a later slot in O(1), and `sweep()` empties only the slots whose time
 * has passed. A lookup never returns an expired name, so sweeping is for
 * memory, not for correctness, and can run on a timer (at most once a slot).
 *
 * ```
 *   register ──► slot(expires) ──keepalive──► later slot ──sweep after expiry──► gone
 * ```
 *
 * @module
 */

import type { SocketAddress } from "../../ffi/structs.ts";
import { AddressCounter, addressKey } from "./limits.ts";

/** A live UDP registration. */
export interface UdpName {
  endpoint: SocketAddress;
  expires: number;
}

interface Entry extends UdpName {
  key: string;
  slot: number;
  /** Connect tokens left, and when they were last counted. */
  tokens: number;
  counted: number;
}

/** Options of the table. */
export interface UdpNamesOptions {
  /** Names at once. */
  maxNames: number;
  /** Names one source address (IPv4, or IPv6 /64) may hold. */
  maxPerAddress: number;
  /** Lifetime without a keepalive, in milliseconds. */
  expiryMs: number;
  /** Width of a wheel slot in milliseconds (default 1000). */
  slotMs?: number;
  /** `connect`s per second that one name may be sent, sustained (default 20). */
  connectRate?: number;
  /** `connect`s that one name may be sent in a burst (default 40). */
  connectBurst?: number;
}

/** Why a registration was refused. */
export type RefusedRegistration = "taken" | "full" | "address-full";

function sameEndpoint(a: SocketAddress, b: SocketAddress): boolean {
  return a.family !== "unix" && b.family !== "unix" && a.address === b.address && a.port === b.port;
}

/** The UDP name table. */
export class UdpNames {
  readonly #options: UdpNamesOptions;
  readonly #slotMs: number;
  readonly #names = new Map<string, Entry>();
  readonly #slots = new Map<number, Set<string>>();
  readonly #perAddress: AddressCounter;
  #swept = -1;

  /** An empty table. */
  constructor(options: UdpNamesOptions) {
    this.#options = options;
    this.#slotMs = options.slotMs ?? 1000;
    this.#perAddress = new AddressCounter(options.maxPerAddress);
  }

  /** Names held now (expired ones count until swept). */
  get size(): number {
    return this.#names.size;
  }

  /** Wheel slots in use (for tests of the sweep). */
  get slotCount(): number {
    return this.#slots.size;
  }

  /** The live registration of `name`, or undefined (also once it expired). */
  get(name: string, now: number): UdpName | undefined {
    const entry = this.#names.get(name);
    if (entry === undefined) return undefined;
    if (entry.expires <= now) {
      this.#remove(name, entry);
      return undefined;
    }
    return entry;
  }

  /** True when `name` is live and was registered from `from`. */
  isOwner(name: string, from: SocketAddress, now: number): boolean {
    const entry = this.get(name, now);
    return entry !== undefined && sameEndpoint(entry.endpoint, from);
  }

  /** Registers or renews `name` for `from`; returns why not when refused. */
  register(name: string, from: SocketAddress, now: number): RefusedRegistration | null {
    const held = this.get(name, now);
    if (held !== undefined) {
      if (!sameEndpoint(held.endpoint, from)) return "taken";
      this.renew(name, now);
      return null;
    }
    if (this.#names.size >= this.#options.maxNames) {
      this.sweep(now);
      if (this.#names.size >= this.#options.maxNames) return "full";
    }
    const key = addressKey(from);
    if (!this.#perAddress.acquire(key)) return "address-full";
    const expires = now + this.#options.expiryMs;
    const entry: Entry = {
      endpoint: from,
      expires,
      key,
      slot: this.#slotOf(expires),
      tokens: this.#options.connectBurst ?? 40,
      counted: now,
    };
    this.#names.set(name, entry);
    this.#slot(entry.slot).add(name);
    return null;
  }

  /** Pushes the expiry of a live `name` out by the lifetime; false when it is not live. */
  renew(name: string, now: number): boolean {
    const entry = this.#names.get(name);
    if (entry === undefined || entry.expires <= now) return false;
    entry.expires = now + this.#options.expiryMs;
    const slot = this.#slotOf(entry.expires);
    if (slot !== entry.slot) {
      this.#unslot(name, entry.slot);
      entry.slot = slot;
      this.#slot(slot).add(name);
    }
    return true;
  }

  /**
   * Spends one of a live name's connect tokens: each `connect` makes the
   * server send a datagram to the name's endpoint, which a forged source
   * address could point at a victim, so their rate is bounded per name.
   */
  allowConnect(name: string, now: number): boolean {
    const entry = this.#names.get(name);
    if (entry === undefined || entry.expires <= now) return false;
    const rate = this.#options.connectRate ?? 20;
    const burst = this.#options.connectBurst ?? 40;
    entry.tokens = Math.min(burst, entry.tokens + Math.max(0, now - entry.counted) / 1000 * rate);
    entry.counted = now;
    if (entry.tokens < 1) return false;
    entry.tokens -= 1;
    return true;
  }

  /**
   * Deletes every name whose slot has ended by `now`. Costs the number of
   * slots that ended since the last sweep plus the names they held.
   */
  sweep(now: number): void {
    const last = Math.floor(now / this.#slotMs) - 1;
    // Slots are visited one by one only while they are fewer than the slots in use.
    if (this.#swept < 0 || last - this.#swept > this.#slots.size) {
      for (const slot of [...this.#slots.keys()]) if (slot <= last) this.#sweepSlot(slot, now);
    } else {
      for (let slot = this.#swept + 1; slot <= last; slot++) this.#sweepSlot(slot, now);
    }
    this.#swept = Math.max(this.#swept, last);
  }

  #sweepSlot(slot: number, now: number): void {
    const names = this.#slots.get(slot);
    if (names === undefined) return;
    for (const name of names) {
      const entry = this.#names.get(name);
      if (entry !== undefined && entry.expires <= now) this.#remove(name, entry);
    }
    if (names.size === 0) this.#slots.delete(slot);
  }

  #slotOf(expires: number): number {
    return Math.floor(expires / this.#slotMs);
  }

  #slot(slot: number): Set<string> {
    let names = this.#slots.get(slot);
    if (names === undefined) {
      names = new Set();
      this.#slots.set(slot, names);
    }
    return names;
  }

  #unslot(name: string, slot: number): void {
    const names = this.#slots.get(slot);
    if (names === undefined) return;
    names.delete(name);
    if (names.size === 0) this.#slots.delete(slot);
  }

  #remove(name: string, entry: Entry): void {
    this.#names.delete(name);
    this.#unslot(name, entry.slot);
    this.#perAddress.release(entry.key);
  }
}
