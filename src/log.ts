/**
 * punchd's one logging module: levels, a timestamp, a message and key=value
 * fields (the attempt id among them) on one line to stderr, where journald
 * takes it. Workers forward their records to the daemon, which writes them.
 *
 * This is the one import site for logging; a later switch to `@std/log`
 * changes this file only.
 *
 * @module
 */

import { startupEnv } from "./environ.ts";
import { readLink } from "../ffi/syscalls.ts";

/** Log levels, most verbose first. */
export const LEVELS = ["debug", "info", "warn", "error"] as const;
/** A log level name. */
export type Level = typeof LEVELS[number];

/** Values a field may hold. */
export type FieldValue = string | number | boolean | bigint | null | undefined;
/** key=value pairs attached to a record. */
export type Fields = Readonly<Record<string, FieldValue>>;

/** One log record, as forwarded from workers. */
export interface LogRecord {
  time: string;
  level: Level;
  message: string;
  fields: Record<string, string>;
}

/** Where records go. */
export type Sink = (record: LogRecord) => void;

/** Parses a level name; throws RangeError for anything else. */
export function parseLevel(text: string): Level {
  const level = LEVELS.find((l) => l === text);
  if (level === undefined) {
    throw new RangeError(`Cannot use log level "${text}": expected one of ${LEVELS.join(", ")}`);
  }
  return level;
}

function quote(value: string): string {
  return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
}

/** Formats a record as one line: `TIME LEVEL message key=value ...`. */
export function formatRecord(record: LogRecord): string {
  const fields = Object.entries(record.fields).map(([k, v]) => ` ${k}=${quote(v)}`).join("");
  return `${record.time} ${record.level.toUpperCase().padEnd(5)} ${record.message}${fields}`;
}

/** syslog priorities journald reads from a `<N>` line prefix (sd-daemon(3)). */
const PRIORITY: Record<Level, number> = { debug: 7, info: 6, warn: 4, error: 3 };

/**
 * Formats a record for journald: the priority prefix, and no timestamp (the journal keeps its
 * own), so that `journalctl -p err` finds errors.
 */
export function formatJournalRecord(record: LogRecord): string {
  const fields = Object.entries(record.fields).map(([k, v]) => ` ${k}=${quote(v)}`).join("");
  return `<${PRIORITY[record.level]}>${record.message}${fields}`;
}

/**
 * True when stderr is the journal's stream: systemd sets JOURNAL_STREAM to
 * `DEVICE:INODE` of the stream it connects, and stderr is still that file
 * (not redirected since).
 */
export function stderrIsJournal(
  journalStream: string | undefined = startupEnv("JOURNAL_STREAM"),
  stderrLink: () => string = () => readLink("/proc/self/fd/2"),
): boolean {
  const inode = journalStream?.match(/^[0-9]+:([0-9]+)$/)?.[1];
  if (inode === undefined) return false;
  try {
    // journald's stream is a socket; a pipe counts too (a supervisor may hand one over).
    const link = stderrLink();
    return link === `socket:[${inode}]` || link === `pipe:[${inode}]`;
  } catch {
    return false;
  }
}

const encoder = new TextEncoder();
let journal: boolean | undefined;

/** Writes each record as one line to stderr (with journald priorities when it is the journal). */
export const stderrSink: Sink = (record: LogRecord): void => {
  try {
    journal ??= stderrIsJournal();
    const line = journal ? formatJournalRecord(record) : formatRecord(record);
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // stderr gone (closed terminal): logging must never take the daemon down.
  }
};

/** A logger: a level threshold, a sink, and fields added to every record. */
export class Logger {
  readonly #level: number;
  readonly #sink: Sink;
  readonly #fields: Record<string, string>;

  /** A logger that passes records at `level` or above to `sink`. */
  constructor(level: Level = "info", sink: Sink = stderrSink, fields: Fields = {}) {
    this.#level = LEVELS.indexOf(level);
    this.#sink = sink;
    this.#fields = stringify(fields);
  }

  /** The threshold level. */
  get level(): Level {
    return LEVELS[this.#level] ?? "info";
  }

  /** A logger with the same level and sink and more fields (e.g. `attempt`). */
  child(fields: Fields): Logger {
    return new Logger(this.level, this.#sink, { ...this.#fields, ...fields });
  }

  /** Logs at `level`. */
  log(level: Level, message: string, fields: Fields = {}): void {
    if (LEVELS.indexOf(level) < this.#level) return;
    this.#sink({
      time: new Date().toISOString(),
      level,
      message,
      fields: { ...this.#fields, ...stringify(fields) },
    });
  }

  /** Logs at debug. */
  debug(message: string, fields?: Fields): void {
    this.log("debug", message, fields);
  }
  /** Logs at info. */
  info(message: string, fields?: Fields): void {
    this.log("info", message, fields);
  }
  /** Logs at warn. */
  warn(message: string, fields?: Fields): void {
    this.log("warn", message, fields);
  }
  /** Logs at error. */
  error(message: string, fields?: Fields): void {
    this.log("error", message, fields);
  }
}

function stringify(fields: Fields): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v !== undefined) out[k] = String(v);
  }
  return out;
}
