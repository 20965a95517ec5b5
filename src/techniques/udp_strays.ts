/**
 * Rate-limited reports of datagrams an attempt refused. A flood of forged
 * datagrams must not become a flood of log lines: the first refusal is
 * logged at once, later ones are counted and summed up in one line at most
 * every `intervalMs`, and whatever is left when the attempt ends in a last one.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import { formatAddress, type SocketAddress } from "../../ffi/structs.ts";
import type { PunchRejection } from "./udp_punch.ts";

/** The message of every summary line. */
export const STRAYS_MESSAGE = "ignored datagrams that are not the peer's punches";

/** Counts refused datagrams and logs a summary at most once per interval. */
export class StrayLog {
  readonly #log: Logger;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #counts = new Map<PunchRejection, number>();
  #last: SocketAddress | null = null;
  #lastLine = -Infinity;

  /** `now` is a clock in milliseconds (injected in tests). */
  constructor(log: Logger, intervalMs = 1000, now: () => number = () => performance.now()) {
    this.#log = log;
    this.#intervalMs = intervalMs;
    this.#now = now;
  }

  /** Counts one refused datagram; logs the summary when the interval has passed. */
  note(reason: PunchRejection, from: SocketAddress): void {
    this.#counts.set(reason, (this.#counts.get(reason) ?? 0) + 1);
    this.#last = from;
    if (this.#now() - this.#lastLine >= this.#intervalMs) this.flush();
  }

  /** Logs what was counted since the last line, if anything. */
  flush(): void {
    if (this.#counts.size === 0 || this.#last === null) return;
    let count = 0;
    for (const n of this.#counts.values()) count += n;
    const fields: Record<string, number | string> = { count };
    for (const [reason, n] of this.#counts) fields[reason.replaceAll(" ", "_")] = n;
    fields.last = formatAddress(this.#last);
    this.#log.warn(STRAYS_MESSAGE, fields);
    this.#counts = new Map();
    this.#last = null;
    this.#lastLine = this.#now();
  }
}
