/**
 * Environment variables the daemon reads from its service manager
 * (JOURNAL_STREAM, NOTIFY_SOCKET) without needing Deno's env permission:
 * from Deno.env when allowed, else through libc's getenv (Deno refuses
 * /proc/self/environ to all but --allow-all).
 *
 * @module
 */

import { getEnv } from "../ffi/syscalls.ts";

/** The value of `name` in the process's environment, or undefined. */
export function startupEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    // No env permission: ask libc.
  }
  try {
    return getEnv(name);
  } catch {
    return undefined;
  }
}
