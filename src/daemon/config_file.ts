/**
 * The configuration file (`--config PATH`, TOML): every setting a flag
 * makes, under the flag's long name without `--`.
 *
 * ```toml
 * socket = "/run/punchd/punchd.socket"
 * group = "punchd"
 * log-level = "info"
 * stun = ["192.0.2.1:3478", "192.0.2.2:3478"]
 * tcp-keepalive = "60,10,6"
 * udp-birthday = true
 * ```
 *
 * The file becomes flags placed before the command line's; a setting the
 * command line also gives is taken from the command line alone (for
 * repeatable ones too: `--stun` on the command line replaces the file's
 * list). Unknown keys, tables, and values of the wrong type are errors that
 * name the file and the key.
 *
 * @module
 */

import { parse } from "smol-toml";

/** Largest configuration file read. */
const MAX_BYTES = 64 * 1024;

/** A setting's kind: a string value, a repeatable one, or a switch. */
export type SettingKind = "string" | "multiple" | "boolean";

/** A configuration file that cannot be used; the message is one line naming the file. */
export class ConfigFileError extends Error {
  /** Builds the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigFileError";
  }
}

function scalar(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  if (typeof value === "bigint") return String(value);
  return null;
}

/**
 * Reads `path` and returns it as flags, leaving out settings whose flag
 * `given` (the command line's) already holds. Throws ConfigFileError.
 */
export function configFileArgs(
  path: string,
  settings: Readonly<Record<string, SettingKind>>,
  given: ReadonlySet<string>,
  read: (path: string) => string = Deno.readTextFileSync,
): string[] {
  let text: string;
  try {
    text = read(path);
  } catch (error) {
    throw new ConfigFileError(`${path}: cannot read: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (text.length > MAX_BYTES) throw new ConfigFileError(`${path}: larger than 64 KiB`);
  let table: Record<string, unknown>;
  try {
    table = parse(text) as Record<string, unknown>;
  } catch (error) {
    const first = ((error as Error).message.split("\n")[0] ?? "").trim();
    const line = (error as { line?: number }).line;
    throw new ConfigFileError(`${path}:${line ?? "?"}: ${first}`, { cause: error });
  }
  const args: string[] = [];
  for (const [key, value] of Object.entries(table)) {
    const kind = settings[key];
    if (kind === undefined) throw new ConfigFileError(`${path}: unknown setting "${key}"`);
    if (given.has(key)) continue;
    if (kind === "boolean") {
      if (typeof value !== "boolean") {
        throw new ConfigFileError(`${path}: ${key}: expected true or false`);
      }
      if (value) args.push(`--${key}`);
      continue;
    }
    const values = kind === "multiple" && Array.isArray(value) ? value : [value];
    for (const item of values) {
      const text = scalar(item);
      if (text === null) {
        throw new ConfigFileError(
          `${path}: ${key}: expected ${
            kind === "multiple" ? "a string or a list of strings" : "a string or a number"
          }`,
        );
      }
      args.push(`--${key}=${text}`);
    }
  }
  return args;
}
