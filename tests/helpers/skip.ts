/**
 * Loud skips: a test that cannot run here says why on stderr and shows up as
 * "ignored" in the summary; it never passes silently.
 *
 * @module
 */

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
