/**
 * A full, shrinking garbage collection of the calling isolate, for the moment a burst of
 * attempts has ended. V8 grows an isolate's heap with the garbage a burst leaves (a thousand
 * attempts left the daemon's isolates at 40-60 MB committed for 10-15 MB live) and, in a
 * daemon that then sits idle, does not give it back on its own: RSS stayed where the burst
 * took it. A full collection returns the empty pages.
 *
 * `--expose-gc` is set at run time (node:v8), and `gc` is taken from a fresh context (node:vm)
 * because the flag only shows `gc` in contexts made after it (a worker's global does not get it
 * either: each isolate takes its own the same way).
 *
 * @module
 */

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let gc: (() => void) | null | undefined;

function collector(): (() => void) | null {
  if (gc !== undefined) return gc;
  const own = (globalThis as { gc?: () => void }).gc;
  if (typeof own === "function") return gc = own;
  try {
    setFlagsFromString("--expose-gc");
    const made = runInNewContext("gc");
    gc = typeof made === "function" ? made as () => void : null;
  } catch {
    gc = null;
  }
  return gc;
}

/** Runs a full garbage collection of this isolate; false when the runtime offers none. */
export function collectGarbage(): boolean {
  const run = collector();
  if (run === null) return false;
  run();
  return true;
}
