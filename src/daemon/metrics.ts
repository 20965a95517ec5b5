/**
 * Prometheus text exposition of the daemon's counters (`--metrics
 * IP:PORT`, off by default): `GET /metrics` on a plain HTTP/1.1 listener
 * built on the FFI socket layer (the daemon holds no network permission of
 * Deno's). Anyone who can reach the port reads the counters, so it belongs
 * on loopback or a management network; it changes nothing.
 *
 * Bounded: at most MAX_CONNECTIONS at once, a request head of at most 4 KiB
 * read within 5 s, one response per connection.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress } from "../../ffi/structs.ts";
import { FAILURE_CLASSES } from "../control/status.ts";
import type { DaemonStatus } from "../control/status.ts";
import type { Logger } from "../log.ts";

/** Connections served at once; more wait in the listen backlog. */
export const MAX_CONNECTIONS = 16;
const MAX_HEAD = 4096;
const READ_TIMEOUT_MS = 5000;

function label(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`);
}

/** The exposition (text format 0.0.4) of a status. */
export function renderMetrics(status: DaemonStatus): string {
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  };
  const techniques = Object.entries(status.techniques);
  const per = (pick: (c: DaemonStatus["techniques"][string]) => number): [string, number][] =>
    techniques.map(([t, c]) => [`{technique="${label(t)}"}`, pick(c)]);
  metric("punchd_build_info", "gauge", "punchd's version.", [
    [`{version="${label(status.version)}"}`, 1],
  ]);
  metric("punchd_uptime_seconds", "gauge", "Seconds since the daemon started.", [[
    "",
    status.uptimeSecs,
  ]]);
  metric("punchd_clients", "gauge", "Clients connected now.", [["", status.clients]]);
  metric("punchd_attempts_in_flight", "gauge", "Attempts running now.", [["", status.attempts]]);
  metric("punchd_firewall_guards", "gauge", "Firewall set elements held now.", [[
    "",
    status.guards,
  ]]);
  metric(
    "punchd_technique_available",
    "gauge",
    "1 when the technique can run here.",
    Object.entries(status.available).map((
      [t, a],
    ) => [`{technique="${label(t)}"}`, a === true ? 1 : 0]),
  );
  metric("punchd_attempts_total", "counter", "Attempts started.", per((c) => c.attempts));
  metric(
    "punchd_attempts_succeeded_total",
    "counter",
    "Attempts that connected.",
    per((c) => c.ok),
  );
  metric(
    "punchd_attempts_relayed_total",
    "counter",
    "Attempts that connected through a TURN relay.",
    per((c) => c.relayed),
  );
  metric(
    "punchd_attempts_cancelled_total",
    "counter",
    "Attempts cancelled (by the client, a disconnect or shutdown).",
    per((c) => c.cancelled),
  );
  metric(
    "punchd_attempts_failed_total",
    "counter",
    "Attempts that failed, by reason class.",
    techniques.flatMap(([t, c]) =>
      FAILURE_CLASSES.map((r): [string, number] => [
        `{technique="${label(t)}",reason="${r}"}`,
        c.failed[r],
      ])
    ),
  );
  metric(
    "punchd_connect_seconds",
    "gauge",
    "Time to connect of the latest successes (up to 1024), by quantile.",
    techniques.flatMap(([t, c]) =>
      c.connectMs === null ? [] : ([
        ["0.5", c.connectMs.p50],
        ["0.9", c.connectMs.p90],
        ["0.99", c.connectMs.p99],
        ["1", c.connectMs.max],
      ] as const).map(([q, ms]): [string, number] => [
        `{technique="${label(t)}",quantile="${q}"}`,
        ms / 1000,
      ])
    ),
  );
  return lines.join("\n") + "\n";
}

const encoder = new TextEncoder();

function response(
  status: string,
  body: string,
  type = "text/plain; charset=utf-8",
): Uint8Array<ArrayBuffer> {
  return encoder.encode(
    `HTTP/1.1 ${status}\r\nContent-Type: ${type}\r\nContent-Length: ${
      encoder.encode(body).byteLength
    }\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** The response to one request head. */
export function answer(head: string, status: () => DaemonStatus): Uint8Array<ArrayBuffer> {
  const match = head.match(/^(GET|HEAD) (\S+) HTTP\/1\.[01]\r?\n/);
  if (match === null) return response("400 Bad Request", "bad request\n");
  const path = (match[2] ?? "").split("?")[0];
  if (path !== "/metrics") return response("404 Not Found", "see /metrics\n");
  const body = renderMetrics(status());
  if (match[1] === "HEAD") {
    return encoder.encode(
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nConnection: close\r\n\r\n",
    );
  }
  return response("200 OK", body, "text/plain; version=0.0.4; charset=utf-8");
}

/** The `--metrics` listener. */
export class MetricsServer {
  readonly #socket: Socket;
  readonly #stop = new AbortController();
  readonly #connections = new Set<Promise<void>>();
  readonly #serving: Promise<void>;

  private constructor(socket: Socket, status: () => DaemonStatus, log: Logger) {
    this.#socket = socket;
    this.#serving = this.#serve(status, log);
  }

  /** Listens on `address`; throws when it cannot. */
  static listen(address: InetAddress, status: () => DaemonStatus, log: Logger): MetricsServer {
    const socket = Socket.create(address.family, "stream", { reuseAddress: true });
    try {
      socket.bind(address);
      socket.listen(64);
    } catch (error) {
      socket.close();
      throw new Error(
        `Cannot serve metrics on ${formatAddress(address)}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
    log.info("metrics served", { address: formatAddress(address), path: "/metrics" });
    return new MetricsServer(socket, status, log);
  }

  /** The port it listens on (for tests that ask for port 0). */
  get port(): number {
    const local = this.#socket.localAddress();
    return local.family === "unix" ? 0 : local.port;
  }

  async #serve(status: () => DaemonStatus, log: Logger): Promise<void> {
    const signal = this.#stop.signal;
    for (;;) {
      while (this.#connections.size >= MAX_CONNECTIONS) await Promise.race(this.#connections);
      let accepted;
      try {
        accepted = await this.#socket.accept(signal);
      } catch (error) {
        if (signal.aborted) return;
        log.warn("metrics accept failed", { error: (error as Error).message });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      const done = this.#handle(accepted.socket, status).finally(() =>
        this.#connections.delete(done)
      );
      this.#connections.add(done);
    }
  }

  async #handle(socket: Socket, status: () => DaemonStatus): Promise<void> {
    const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(READ_TIMEOUT_MS)]);
    try {
      const buf = new Uint8Array(MAX_HEAD);
      let length = 0;
      let head = "";
      while (length < MAX_HEAD) {
        const n = await socket.read(buf.subarray(length), signal);
        if (n === 0) return;
        length += n;
        head = new TextDecoder().decode(buf.subarray(0, length));
        if (head.includes("\r\n\r\n") || head.includes("\n\n")) break;
      }
      await socket.write(answer(head, status), signal);
    } catch {
      // A slow, silent or vanished scraper: drop it.
    } finally {
      socket.close();
    }
  }

  /** Stops listening and ends open connections. */
  async close(): Promise<void> {
    this.#stop.abort();
    await this.#serving;
    await Promise.allSettled([...this.#connections]);
    this.#socket.close();
  }
}
