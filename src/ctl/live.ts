/**
 * The live display of `punchctl initiate`/`respond`: every exchange as one
 * line on stdout as it happens (text, or one JSON object per line), and on a
 * terminal one status line on stderr that updates in place (elapsed time,
 * progress sent, peer data received) and is cleared before each line and at
 * the end, so lines and status never mix.
 *
 * @module
 */

/** Where the display writes (Deno.stdout and Deno.stderr fit). */
export interface Output {
  writeSync(bytes: Uint8Array): number;
}

/** One exchange or outcome of an attempt. */
export type LiveEvent =
  | { event: "progress"; data: string }
  | { event: "peer"; data: string }
  | {
    event: "connected";
    technique: string;
    ms: number;
    local: string;
    remote: string;
    via?: string;
  }
  | { event: "failed"; reason: string };

/** The text line of an event (what is printed without --json). */
export function eventLine(e: LiveEvent): string {
  switch (e.event) {
    case "progress":
      return `progress ${e.data}`;
    case "peer":
      return `peer ${e.data}`;
    case "connected":
      return `connected with ${e.technique} in ${e.ms} ms: local ${e.local}, remote ${e.remote}${
        e.via === undefined ? "" : ` via ${e.via}`
      }`;
    case "failed":
      return `failed: ${e.reason}`;
  }
}

/**
 * The peer's data in one stdin line: `progress DATA` as the peer's punchctl printed it (its
 * JSON line too), or a bare `DATA` typed by hand; null for the peer's other lines (`peer ...`,
 * `connected ...`, `failed: ...`), so that one punchctl's stdout can feed the other's stdin.
 */
export function peerDataOf(line: string): string | null {
  const text = line.trim();
  if (text === "") return null;
  if (text.startsWith("{")) {
    try {
      const event = JSON.parse(text);
      return event?.event === "progress" && typeof event.data === "string" ? event.data : null;
    } catch {
      return null;
    }
  }
  const progress = /^progress\s+(\S.*)$/.exec(text);
  if (progress !== null) return progress[1] ?? null;
  if (/^(peer\s|connected\s|failed:)/.test(text)) return null;
  return text;
}

const encoder = new TextEncoder();

/** Options of {@linkcode LiveDisplay}. */
export interface LiveDisplayOptions {
  /** Lines go here. */
  out: Output;
  /** The status line goes here, when `statusLine`. */
  err: Output;
  /** JSON lines instead of text. */
  json: boolean;
  /** Draw the updating status line (stderr is a terminal). */
  statusLine: boolean;
  /** What the attempt is, the start of the status line. */
  label: string;
  /** Milliseconds clock (injected in tests). */
  now?: () => number;
  /** Redraw interval of the status line; 0: only on events (tests). */
  redrawMs?: number;
}

/** The display of one attempt; call {@linkcode LiveDisplay.close} at the end. */
export class LiveDisplay {
  readonly #o: LiveDisplayOptions;
  readonly #now: () => number;
  readonly #started: number;
  #sent = 0;
  #received = 0;
  #drawn = false;
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Starts the display (and its redraw timer on a terminal). */
  constructor(options: LiveDisplayOptions) {
    this.#o = options;
    this.#now = options.now ?? (() => performance.now());
    this.#started = this.#now();
    if (options.statusLine) {
      this.#draw();
      const every = options.redrawMs ?? 200;
      if (every > 0) this.#timer = setInterval(() => this.#draw(), every);
    }
  }

  /** The status line's text. */
  statusText(): string {
    const secs = ((this.#now() - this.#started) / 1000).toFixed(1);
    return `${this.#o.label}: ${this.#sent} progress sent, ${this.#received} peer data received, ${secs} s`;
  }

  #draw(): void {
    if (!this.#o.statusLine) return;
    this.#o.err.writeSync(encoder.encode(`\r\x1b[K${this.statusText()}`));
    this.#drawn = true;
  }

  #clear(): void {
    if (!this.#drawn) return;
    this.#o.err.writeSync(encoder.encode("\r\x1b[K"));
    this.#drawn = false;
  }

  /** Prints one event (and counts exchanges for the status line). */
  print(e: LiveEvent): void {
    if (e.event === "progress") this.#sent++;
    if (e.event === "peer") this.#received++;
    this.#clear();
    this.#o.out.writeSync(encoder.encode(`${this.#o.json ? JSON.stringify(e) : eventLine(e)}\n`));
    if (e.event === "progress" || e.event === "peer") this.#draw();
  }

  /** Stops redrawing and clears the status line. Idempotent. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#clear();
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}
