/**
 * The interface every technique implements. A technique module is pure
 * policy plus I/O through `ffi/`; it runs inside its worker, which hosts many
 * attempts at once (see `worker_host.ts`).
 *
 * @module
 */

import type { Socket } from "../../ffi/socket.ts";
import type { Guard } from "../firewall/guards.ts";
import type { Logger } from "../log.ts";
import type { AttemptSpec } from "./protocol.ts";

/** What a running attempt can do besides its own I/O. */
export interface AttemptContext {
  /** Aborted on cancel, timeout or shutdown; every wait must honour it. */
  signal: AbortSignal;
  /** Sends data the application must forward to its peer. */
  progress(data: string): void;
  /** Resolves with the next `peer|ID|DATA` from the application. */
  nextPeerData(): Promise<string>;
  /** The attempt's logger (carries the attempt id). */
  log: Logger;
  /** Records the latest recoverable error; a timeout reports it as the reason behind it. */
  noteError(text: string): void;
  /**
   * Guards in punchd's firewall. The daemon installs them and removes them
   * when the attempt ends, however it ends (even if the worker dies).
   */
  firewall: AttemptFirewall;
  /** The connection goes through this TURN server (`relay`): `ok` says so. */
  relayedVia?(server: string): void;
}

/** Guards of one attempt in punchd's nftables table (see firewall/guards.ts). */
export interface AttemptFirewall {
  /** Installs a guard; resolves with its handle once the kernel has it. */
  add(guard: Guard): Promise<number>;
  /** Removes a guard added by this attempt (it goes anyway when the attempt ends). */
  remove(handle: number): Promise<void>;
}

/**
 * How an attempt guards its flows from the start: per destination port one
 * flow from the source port, each with rst-out, syn-ack (its ISN + 1) and
 * `extra`, each with an ISN of its own or (`sharedIsn`) one for all.
 */
export interface GuardPlan {
  extra: ("time-exceeded" | "pure-syn")[];
  sharedIsn?: boolean;
}

/** One hole punching technique. */
export interface Technique {
  /** The name used on the wire, e.g. "tcp-direct". */
  readonly name: string;
  /** True when attempts add firewall guards (the daemon then needs its nftables table). */
  readonly needsFirewall: boolean;
  /**
   * Checks what the generic codec cannot (how many ports, EXTRA format);
   * throws RangeError/SyntaxError with a client-facing reason. Runs in the
   * daemon before anything starts.
   */
  validate(spec: AttemptSpec): void;
  /**
   * The guards this attempt asks for first, when they follow from the spec
   * alone (tcp_flow_guard.ts `plannedGuards`): the daemon then puts them in
   * while the attempt travels to the worker and picks the flows' ISNs
   * (`spec.isns`), and answers the worker's request for them with what is
   * already in the kernel. Null or absent: the worker asks as it goes.
   */
  guardPlan?(spec: AttemptSpec): GuardPlan | null;
  /**
   * Runs one attempt to a connected socket, or throws. Must release every
   * resource it made on every path, including when `context.signal` aborts.
   */
  run(spec: AttemptSpec, context: AttemptContext): Promise<Socket>;
}
