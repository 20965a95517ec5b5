/**
 * The one import site of the command-line parser (`node:util` parseArgs
 * while JSR's `@std/cli` cannot be reached; switching is a change to this
 * file), shared by punchd, the rendezvous server and the example peer.
 *
 * @module
 */

export { parseArgs } from "node:util";

/** Parses a whole decimal number within min..max, or throws RangeError/SyntaxError naming the flag. */
export function integerFlag(text: string, flag: string, min: number, max: number): number {
  if (!/^(0|[1-9][0-9]*)$/.test(text)) {
    throw new SyntaxError(`--${flag}: "${text}" is not a whole number`);
  }
  const value = Number(text);
  if (value < min || value > max) {
    throw new RangeError(`--${flag}: ${text} is out of range ${min}-${max}`);
  }
  return value;
}
