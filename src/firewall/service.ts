/**
 * The one path through which punchd changes its firewall: guards become set
 * elements, queued and written in batches by at most one `nft -f -` process
 * at a time, with caps on the elements each uid and everyone may hold.
 *
 * Batches go through libnftables in-process when it is installed (spawning
 * `nft` otherwise), so installing a guard costs a fraction of a millisecond
 * and stays cheap on an attempt's success path.
 *
 * Each guard has an owner (an attempt) and a timeout, so the elements of a
 * daemon that dies expire by themselves. Removal is idempotent (`add` then
 * `delete` in one batch), so an element that already expired never fails a
 * batch; a batch that fails anyway is retried one operation at a time, so
 * one bad operation fails only its own caller.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import { type Element, type Guard, guardElements, TABLE } from "./guards.ts";
import { type LibraryNft, libraryNft, type NftRunner, runNft } from "./nftables.ts";

/** A cap on guards was reached; the attempt asking fails with this message. */
export class GuardLimitError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "GuardLimitError";
  }
}

/** Options of the service. */
export interface FirewallServiceOptions {
  log: Logger;
  /** Set elements held by everyone at once. */
  maxElements: number;
  /** Set elements held by one non-root uid at once (root is bounded by maxElements only). */
  maxElementsPerUid: number;
  /** Operations in one nft batch (default 2000). */
  batchLimit?: number;
  /** Runs nft (default: libnftables in-process when installed, else the `nft` command). */
  nft?: NftRunner;
}

interface Op {
  text: string;
  resolve(): void;
  reject(error: Error): void;
}

interface Held {
  uid: number;
  /** Guard handle to its elements. */
  guards: Map<number, Element[]>;
}

function elementText(e: Element): string {
  return `${e.set} { ${e.key} }`;
}

/** punchd's firewall writer. */
export class FirewallService {
  readonly #options: FirewallServiceOptions;
  readonly #nft: NftRunner;
  /** The in-process library behind #nft, when the default runner uses it. */
  readonly #library: LibraryNft | null;
  readonly #owners = new Map<number, Held>();
  readonly #perUid = new Map<number, number>();
  /** Element text to the number of guards that need it. */
  readonly #refs = new Map<string, number>();
  #total = 0;
  #queue: Op[] = [];
  #draining: Promise<void> | null = null;
  #nextHandle = 1;
  #batches = 0;

  /** Builds the service; nothing runs until the first guard. */
  constructor(options: FirewallServiceOptions) {
    this.#options = options;
    this.#library = options.nft === undefined ? libraryNft() : null;
    this.#nft = options.nft ?? this.#library?.run ?? runNft;
  }

  /** True when batches go through libnftables in-process rather than the `nft` command. */
  get inProcess(): boolean {
    return this.#library !== null;
  }

  /** Writes what is queued, then frees the library's context (the service is done). */
  async close(): Promise<void> {
    await this.flushed();
    await this.#library?.close();
  }

  /** Elements held now, by everyone. */
  get elements(): number {
    return this.#total;
  }

  /** True while `owner` holds a guard. */
  holds(owner: number): boolean {
    return this.#owners.has(owner);
  }

  /** nft batches run so far. */
  get batches(): number {
    return this.#batches;
  }

  /**
   * Installs `guard` for `owner` (of `uid`) for at most `ttlMs`; resolves
   * with a handle once the kernel has it. Throws GuardLimitError at a cap,
   * TypeError/RangeError for a bad guard, Error when nft fails.
   */
  async add(owner: number, uid: number, guard: Guard, ttlMs: number): Promise<number> {
    const [handle] = await this.addAll(owner, uid, [guard], ttlMs);
    return handle as number;
  }

  /**
   * Installs `guards` for `owner` (of `uid`) for at most `ttlMs`, all or
   * none, in one nft batch (an attempt's guards go in together: one batch
   * costs about as much as one guard); resolves with their handles, in
   * order, once the kernel has them all. Throws as {@linkcode add}; when it
   * throws, none of them is installed or counted.
   */
  async addAll(owner: number, uid: number, guards: Guard[], ttlMs: number): Promise<number[]> {
    const each = guards.map((guard) => guardElements(guard));
    const count = each.reduce((sum, elements) => sum + elements.length, 0);
    const { maxElements, maxElementsPerUid } = this.#options;
    const mine = this.#perUid.get(uid) ?? 0;
    if (this.#total + count > maxElements) {
      throw new GuardLimitError(`Cannot add a firewall guard: punchd holds ${maxElements} already`);
    }
    if (uid !== 0 && mine + count > maxElementsPerUid) {
      throw new GuardLimitError(
        `Cannot add a firewall guard: this user holds ${maxElementsPerUid} already`,
      );
    }
    let held = this.#owners.get(owner);
    if (held === undefined) {
      held = { uid, guards: new Map() };
      this.#owners.set(owner, held);
    }
    const seconds = Math.max(1, Math.ceil(ttlMs / 1000));
    const handles: number[] = [];
    const lines: string[] = [];
    for (const elements of each) {
      const handle = this.#nextHandle++;
      handles.push(handle);
      held.guards.set(handle, elements);
      this.#count(uid, elements.length);
      for (const e of elements) {
        const text = elementText(e);
        const refs = this.#refs.get(text) ?? 0;
        this.#refs.set(text, refs + 1);
        if (refs === 0) {
          lines.push(`add element ${TABLE} ${e.set} { ${e.key} timeout ${seconds}s }`);
        }
      }
    }
    try {
      if (lines.length > 0) await this.#run(lines.join("\n"));
    } catch (error) {
      // Not installed: forget them (without queueing deletes for what never went in).
      for (const [i, handle] of handles.entries()) {
        if (held.guards.delete(handle)) this.#forget(held.uid, each[i] ?? [], false);
      }
      if (held.guards.size === 0 && this.#owners.get(owner) === held) this.#owners.delete(owner);
      throw error;
    }
    return handles;
  }

  /** Removes one guard of `owner`; resolves once the kernel no longer has it. */
  async remove(owner: number, handle: number): Promise<void> {
    const held = this.#owners.get(owner);
    const elements = held?.guards.get(handle);
    if (held === undefined || elements === undefined) return;
    held.guards.delete(handle);
    if (held.guards.size === 0) this.#owners.delete(owner);
    await this.#forget(held.uid, elements, true);
  }

  /** Removes every guard of `owner` (its attempt ended); never throws. */
  async release(owner: number): Promise<void> {
    const held = this.#owners.get(owner);
    if (held === undefined) return;
    this.#owners.delete(owner);
    const all = [...held.guards.values()];
    held.guards.clear();
    await Promise.all(all.map((elements) => this.#forget(held.uid, elements, true)));
  }

  /** Resolves when every queued change is written. */
  async flushed(): Promise<void> {
    while (this.#draining !== null) await this.#draining;
  }

  #count(uid: number, delta: number): void {
    this.#total += delta;
    const n = (this.#perUid.get(uid) ?? 0) + delta;
    if (n === 0) this.#perUid.delete(uid);
    else this.#perUid.set(uid, n);
  }

  /** Drops references; deletes (when `write`) the elements nobody needs any more. Never throws. */
  async #forget(uid: number, elements: Element[], write: boolean): Promise<void> {
    this.#count(uid, -elements.length);
    const lines: string[] = [];
    // Reverse order: a syn-ack guard stops dropping before its allowed ack goes.
    for (const e of [...elements].reverse()) {
      const text = elementText(e);
      const refs = (this.#refs.get(text) ?? 1) - 1;
      if (refs > 0) {
        this.#refs.set(text, refs);
        continue;
      }
      this.#refs.delete(text);
      // add first: deleting an element that expired already must not fail the batch.
      lines.push(`add element ${TABLE} ${e.set} { ${e.key} timeout 1s }`);
      lines.push(`delete element ${TABLE} ${e.set} { ${e.key} }`);
    }
    if (!write || lines.length === 0) return;
    try {
      await this.#run(lines.join("\n"));
    } catch (error) {
      this.#options.log.error("cannot remove a firewall guard (it expires by itself)", {
        error: (error as Error).message,
      });
    }
  }

  #run(text: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ text, resolve, reject });
      this.#draining ??= this.#drain().finally(() => this.#draining = null);
    });
  }

  async #drain(): Promise<void> {
    const limit = this.#options.batchLimit ?? 2000;
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, limit);
      const error = await this.#write(batch.map((op) => op.text).join("\n"));
      if (error === null) {
        for (const op of batch) op.resolve();
      } else if (batch.length === 1) {
        batch[0]?.reject(error);
      } else {
        // One operation broke the batch: find it, and let the others through.
        for (const op of batch) {
          const alone = await this.#write(op.text);
          if (alone === null) op.resolve();
          else op.reject(alone);
        }
      }
    }
  }

  async #write(script: string): Promise<Error | null> {
    this.#batches++;
    try {
      const result = await this.#nft(["-f", "-"], script + "\n");
      if (result.code === 0) return null;
      const why = result.stderr.trim().split("\n")[0] || `nft exit ${result.code}`;
      return new Error(`Cannot change the firewall: ${why}`);
    } catch (error) {
      return new Error(`Cannot change the firewall: cannot run nft (${(error as Error).message})`, {
        cause: error,
      });
    }
  }
}
