/**
 * Environment variables the daemon reads from its service manager
 * (JOURNAL_STREAM, NOTIFY_SOCKET) without needing Deno's env permission:
 * from Deno.env when allowed, else from /proc/self/environ (the environment
 * the process started with, readable with --allow-read).
 *
 * @module
 */

/** The value of `name` in the process's environment, or undefined. */
export function startupEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    // No env permission: read what the process started with.
  }
  try {
    const entries = Deno.readTextFileSync("/proc/self/environ").split("\0");
    const prefix = `${name}=`;
    return entries.find((e) => e.startsWith(prefix))?.slice(prefix.length);
  } catch {
    return undefined;
  }
}
