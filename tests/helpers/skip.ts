/**
 * Loud skips: a test that cannot run here says why on stderr and shows up as
 * "ignored" in the summary; it never passes silently.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";

const encoder = new TextEncoder();

/** Writes a NOTE/SKIPPED line to stderr. */
export function note(text: string): void {
  Deno.stderr.writeSync(encoder.encode(`${text}\n`));
}

/**
 * For `Deno.test({ ignore })`: true (skip) when `condition` is false, after
 * printing `SKIPPED: <name>: <reason>`.
 */
export function skipUnless(condition: boolean, name: string, reason: string): boolean {
  if (!condition) note(`SKIPPED: ${name}: ${reason}`);
  return !condition;
}

/** True when this process runs as root (CI does). */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/** True when this host can bind the IPv6 loopback address ::1. */
export function hasIpv6Loopback(): boolean {
  try {
    using probe = Socket.create("inet6", "stream");
    probe.bind(inetAddress("::1", 0));
    return true;
  } catch {
    return false;
  }
}

/** True when `command` runs here and exits 0 with `args` (default `--version`). */
export function hasCommand(command: string, args: string[] = ["--version"]): boolean {
  try {
    return new Deno.Command(command, { args, stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}
