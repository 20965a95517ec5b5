/**
 * Keeps TURN allocations alive while their relayed connections live.
 *
 * RFC 6062 ties a TCP allocation, and every data connection of it, to its
 * control connection: closing that ends them. So after the relayed socket
 * is handed over, punchd keeps the control connection open and refreshes
 * the allocation before its LIFETIME runs out, for as long as the handed-
 * over data connection exists. Whether it exists is read from the kernel's
 * socket table (`/proc/net/tcp`, `/proc/net/tcp6`) by its addresses: punchd
 * keeps no copy of the application's socket (a copy would keep the
 * connection open after the application closes it).
 *
 * ```
 *  held ──(every checkMs: data connection still ESTABLISHED?)── no ──► Refresh 0, close
 *    │                                                                   ▲
 *    └──(lifetime / 2 passed)── Refresh ── fails ──────────────────────────┘
 * ```
 *
 * At most {@linkcode MAX_LEASES} at once; past that a new one is released
 * at once (its connection then ends: logged).
 *
 * @module
 */

import { readFileRaw } from "../../ffi/syscalls.ts";
import { parseIp } from "../../ffi/ip.ts";
import type { InetAddress } from "../../ffi/structs.ts";
import type { Logger } from "../log.ts";
import type { TurnControl } from "./client.ts";

/** Allocations held at once by one keeper. */
export const MAX_LEASES = 1024;

/** TCP_ESTABLISHED in /proc/net/tcp. */
const ESTABLISHED = 1;

/** Options (tests shorten the intervals and read a fake socket table). */
export interface KeeperOptions {
  log: Logger;
  /** Milliseconds between checks of the data connections (default 15000). */
  checkMs?: number;
  /** The state of the TCP connection local → remote, or null when there is none. */
  tcpState?: (local: InetAddress, remote: InetAddress) => number | null;
  /** Told the number of allocations held whenever it changes. */
  onChange?: (count: number) => void;
}

interface Lease {
  control: TurnControl;
  local: InetAddress;
  remote: InetAddress;
  refreshedAt: number;
}

/** The `/proc/net/tcp` address of `address` (hex, each 32-bit word in host order: little-endian). */
function procAddress(address: InetAddress): string {
  const bytes = parseIp(address.address);
  let hex = "";
  for (let i = 0; i < bytes.length; i += 4) {
    for (let j = 3; j >= 0; j--) hex += (bytes[i + j] ?? 0).toString(16).padStart(2, "0");
  }
  return `${hex.toUpperCase()}:${address.port.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** The state of the TCP connection local → remote in this network namespace, or null. */
export function procTcpState(local: InetAddress, remote: InetAddress): number | null {
  const path = local.family === "inet" ? "/proc/net/tcp" : "/proc/net/tcp6";
  const want = `${procAddress(local)} ${procAddress(remote)}`;
  const text = new TextDecoder().decode(readFileRaw(path));
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (`${fields[1]} ${fields[2]}` === want) return parseInt(fields[3] ?? "", 16);
  }
  return null;
}

/** The allocations of one process. */
export class TurnKeeper {
  readonly #leases = new Set<Lease>();
  readonly #log: Logger;
  readonly #tcpState: (local: InetAddress, remote: InetAddress) => number | null;
  readonly #onChange: (count: number) => void;
  readonly #checkMs: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #checking = false;

  /** A keeper that holds nothing yet. */
  constructor(options: KeeperOptions) {
    this.#log = options.log;
    this.#tcpState = options.tcpState ?? procTcpState;
    this.#onChange = options.onChange ?? (() => {});
    this.#checkMs = options.checkMs ?? 15_000;
  }

  /** Allocations held now. */
  get size(): number {
    return this.#leases.size;
  }

  /**
   * Holds `control` for as long as the data connection `local` → `remote`
   * (the socket handed over) exists; takes ownership of `control`.
   */
  hold(control: TurnControl, local: InetAddress, remote: InetAddress): void {
    if (this.#leases.size >= MAX_LEASES) {
      this.#log.warn("too many relayed connections held: releasing the new one", {
        max: MAX_LEASES,
      });
      void this.#release({ control, local, remote, refreshedAt: Date.now() }, "too many");
      return;
    }
    this.#leases.add({ control, local, remote, refreshedAt: Date.now() });
    this.#timer ??= setInterval(() => void this.check(), this.#checkMs);
    this.#onChange(this.#leases.size);
  }

  /** One round: releases allocations whose connection is gone, refreshes those due. */
  async check(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    try {
      for (const lease of [...this.#leases]) {
        let state: number | null;
        try {
          state = this.#tcpState(lease.local, lease.remote);
        } catch (error) {
          this.#log.warn("cannot read the socket table", { error: (error as Error).message });
          continue;
        }
        if (state !== ESTABLISHED) {
          await this.#release(lease, "the relayed connection ended");
          continue;
        }
        const dueMs = (lease.control.lifetime * 1000) / 2;
        if (Date.now() - lease.refreshedAt < dueMs - this.#checkMs) continue;
        try {
          await lease.control.refresh(600, AbortSignal.timeout(5000));
          lease.refreshedAt = Date.now();
        } catch (error) {
          this.#log.warn("cannot refresh a TURN allocation: the relayed connection ends", {
            server: `${lease.control.server.address}:${lease.control.server.port}`,
            error: (error as Error).message,
          });
          await this.#release(lease, "refresh failed");
        }
      }
    } finally {
      this.#checking = false;
    }
  }

  /** Releases every allocation (their relayed connections end). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await Promise.all([...this.#leases].map((lease) => this.#release(lease, "shutting down")));
  }

  async #release(lease: Lease, why: string): Promise<void> {
    this.#leases.delete(lease);
    try {
      await lease.control.refresh(0, AbortSignal.timeout(2000));
    } catch {
      // Closing the control connection ends the allocation anyway.
    }
    lease.control.close();
    this.#log.info("TURN allocation released", {
      relayed: `${lease.control.relayed.address}:${lease.control.relayed.port}`,
      why,
    });
    if (this.#leases.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
    this.#onChange(this.#leases.size);
  }
}
