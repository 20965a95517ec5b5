/**
 * Warnings about single packets, at most one line per interval: a forged
 * flood must not turn into a flood of log lines.
 *
 * The first occurrence is logged at once; later ones within `intervalMs` of
 * the last line are only counted, and the next line carries that count as
 * `suppressed`. {@linkcode PacketWarning.flush} logs what is still counted
 * when the attempt ends.
 *
 * @module
 */

import type { Fields, Logger } from "../log.ts";

/** Options of a {@linkcode PacketWarning}. */
export interface PacketWarningOptions {
  /** Milliseconds between two lines (default 1000). */
  intervalMs?: number;
  /** Clock in milliseconds (default performance.now). */
  now?: () => number;
}

/** One rate-limited warning of one attempt. */
export class PacketWarning {
  readonly #log: Logger;
  readonly #message: string;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #last = -Infinity;
  #suppressed = 0;

  /** A warning with `message`, written to `log`. */
  constructor(log: Logger, message: string, options: PacketWarningOptions = {}) {
    this.#log = log;
    this.#message = message;
    this.#intervalMs = options.intervalMs ?? 1000;
    this.#now = options.now ?? (() => performance.now());
  }

  /** One occurrence: logged, or counted when the last line is recent. */
  note(fields: Fields = {}): void {
    const now = this.#now();
    if (now - this.#last < this.#intervalMs) {
      this.#suppressed++;
      return;
    }
    this.#last = now;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    this.#log.warn(this.#message, suppressed > 0 ? { ...fields, suppressed } : fields);
  }

  /** Logs how many occurrences are counted but not logged yet, if any. */
  flush(): void {
    if (this.#suppressed === 0) return;
    this.#log.warn(this.#message, { suppressed: this.#suppressed });
    this.#suppressed = 0;
  }
}
