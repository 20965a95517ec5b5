/**
 * The client library for Deno applications: connect to punchd, start or
 * answer attempts, receive progress data to forward to the peer, and get the
 * connected socket (received with SCM_RIGHTS and MSG_CMSG_CLOEXEC, so it has
 * close-on-exec set) as a `Socket` with streams.
 *
 * ```ts
 * const punchd = await PunchdClient.connect("/run/punchd/punchd.socket");
 * const attempt = punchd.initiate({ id: "a1", technique: "tcp-direct", srcIp, srcPorts: [4000], dstIp, dstPorts: [5000] });
 * for await (const data of attempt.progress) sendToPeer(data); // via the rendezvous server
 * const socket = await attempt.socket;
 * const { readable, writable } = socket.streams();
 * ```
 *
 * Depends only on the control codec and `ffi/`.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { lookupUser, peerCredentials, setNonBlocking } from "../../ffi/syscalls.ts";
import {
  decodeReply,
  encodeRequest,
  type Endpoints,
  MAX_JSON_REPLY_BYTES,
  type Protocol,
  type Reply,
  type TechniqueChoice,
  type TechniqueName,
} from "../control/codec.ts";
import { DEFAULT_SOCKET_PATH, LineSplitter } from "../control/connection.ts";
import type { DaemonStatus, NatReport } from "../control/status.ts";

export type { DaemonStatus, NatReport };

export { DEFAULT_SOCKET_PATH };

/** punchd answered `error|ID|REASON`. */
export class PunchdError extends Error {
  /** The attempt or request ID the error is about ("-" for none). */
  readonly id: string;
  /** punchd's reason. */
  readonly reason: string;
  /** Builds the error. */
  constructor(id: string, reason: string) {
    super(`punchd refused ${id}: ${reason}`);
    this.name = "PunchdError";
    this.id = id;
    this.reason = reason;
  }
}

/** The endpoint punchd says to publish. */
export interface PublicEndpoint {
  ip: string;
  ports: number[];
  /** How punchd learned it ("local" without probe servers). */
  source: string;
  /**
   * The NAT's RFC 5780 behaviour `MAPPING,FILTERING` (e.g. `eim,apdf`), when punchd could
   * classify it (UDP, with a STUN server that has an alternate address).
   */
  nat?: string;
}

/** An attempt in flight. */
export interface Attempt {
  readonly id: string;
  /** Progress data, in order, to forward to the peer; ends when the attempt ends. */
  readonly progress: AsyncIterable<string>;
  /** The connected socket (close-on-exec set), or a PunchdError. */
  readonly socket: Promise<Socket>;
  /**
   * For `auto` and list requests, and relayed connections: which technique connected, after
   * how many milliseconds, and for a relayed one through which TURN server (`via`, `IP:PORT`;
   * from punchd's `ok|ID|TECHNIQUE|MS[|via=IP:PORT]`); null otherwise or on failure.
   */
  readonly winner: Promise<{ technique: TechniqueName; ms: number; via?: string } | null>;
  /** Forwards later data from the peer (`peer|ID|DATA`). */
  peer(data: string): Promise<void>;
  /** Asks punchd to cancel; `socket` then rejects. */
  cancel(): Promise<void>;
}

/** Parameters of initiate. */
export interface InitiateParams extends Endpoints {
  id: string;
  /** One technique, `auto`, `auto-udp`, or an ordered list (`tcp-syni,tcp-nutss`). */
  technique: TechniqueChoice;
}

/** Parameters of respond: initiate's plus the initiator's progress data. */
export interface RespondParams extends InitiateParams {
  extra: string;
}

class ProgressQueue implements AsyncIterable<string> {
  #items: string[] = [];
  #waiters: ((r: IteratorResult<string>) => void)[] = [];
  #ended = false;

  push(item: string): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter({ value: item, done: false });
    else this.#items.push(item);
  }

  end(): void {
    this.#ended = true;
    for (const w of this.#waiters.splice(0)) w({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<string> {
    return {
      next: () => {
        const item = this.#items.shift();
        if (item !== undefined) return Promise.resolve({ value: item, done: false });
        if (this.#ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.#waiters.push(resolve));
      },
    };
  }
}

/** Options of {@linkcode PunchdClient.connect}. */
export interface ConnectOptions {
  /**
   * The uid punchd must run as. Default: root (0), or the `punchd` system user that the Debian
   * package's service runs as (only root can create that account).
   */
  daemonUid?: number;
}

/** The uids a daemon may run as when the application names none: root and the service user. */
export function defaultDaemonUids(): number[] {
  const service = lookupUser(SERVICE_USER);
  return service === undefined || service === 0 ? [0] : [0, service];
}

/** The system user the packaged service runs as. */
export const SERVICE_USER = "punchd";

interface Pending {
  progress: ProgressQueue;
  won: (winner: { technique: TechniqueName; ms: number; via?: string } | null) => void;
  resolve: (socket: Socket) => void;
  reject: (error: Error) => void;
}

const encoder = new TextEncoder();

/** A connection to punchd's control socket. */
export class PunchdClient {
  readonly #socket: Socket;
  readonly #attempts = new Map<string, Pending>();
  readonly #endpoints = new Map<
    string,
    { resolve: (e: PublicEndpoint) => void; reject: (e: Error) => void }
  >();
  /** Pending status/report questions by ID. */
  readonly #info = new Map<
    string,
    { resolve: (json: string) => void; reject: (e: Error) => void }
  >();
  #nextInfo = 1;
  /** fds received but not yet matched to their `ok` line. */
  readonly #fds: number[] = [];
  readonly #reading: Promise<void>;
  #closed = false;
  #failure: Error | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    this.#reading = this.#readLoop();
  }

  /**
   * Connects to punchd at `path` and checks by SO_PEERCRED that the process
   * listening there runs as `daemonUid` (default: root, or the packaged service's `punchd`
   * user), so that an impostor on the path gets no request (and no data) of ours.
   */
  static async connect(
    path: string = DEFAULT_SOCKET_PATH,
    { daemonUid }: ConnectOptions = {},
  ): Promise<PunchdClient> {
    const socket = Socket.create("unix", "stream");
    try {
      await socket.connect({ family: "unix", path });
      const { uid, pid } = peerCredentials(socket.fd);
      const allowed = daemonUid === undefined ? defaultDaemonUids() : [daemonUid];
      if (!allowed.includes(uid)) {
        throw new Error(
          `the process listening there (pid ${pid}) runs as uid ${uid}, not ${
            allowed.join(" or ")
          }: not punchd`,
        );
      }
    } catch (error) {
      socket.close();
      throw new Error(`Cannot connect to punchd at ${path}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    return new PunchdClient(socket);
  }

  /** Starts a hole punching attempt. */
  initiate(params: InitiateParams): Attempt {
    return this.#attempt(params.id, encodeRequest({ type: "initiate", ...params }));
  }

  /** Answers an attempt the peer started; `extra` is the peer's progress data. */
  respond(params: RespondParams): Attempt {
    return this.#attempt(params.id, encodeRequest({ type: "respond", ...params }));
  }

  /** Asks punchd which endpoint to publish for a coming attempt. */
  endpoint(
    id: string,
    protocol: Protocol,
    srcIp: string,
    srcPorts: number[],
  ): Promise<PublicEndpoint> {
    if (this.#endpoints.has(id) || this.#attempts.has(id) || this.#info.has(id)) {
      return Promise.reject(new Error(`Cannot ask for endpoint: ID ${id} is in use`));
    }
    let line: string;
    try {
      // Encode first: a request the codec refuses must not leave its ID marked in use.
      line = encodeRequest({ type: "endpoint", id, protocol, srcIp, srcPorts });
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#endpoints.set(id, { resolve, reject });
      this.#send(line).catch(
        (error) => {
          this.#endpoints.delete(id);
          reject(error);
        },
      );
    });
  }

  /** The daemon's state and counters (`status`). */
  async status(): Promise<DaemonStatus> {
    return JSON.parse(await this.#ask("status")) as DaemonStatus;
  }

  /** What the host's NAT does (`report`; runs discovery, takes seconds). */
  async report(): Promise<NatReport> {
    return JSON.parse(await this.#ask("report")) as NatReport;
  }

  #ask(type: "status" | "report"): Promise<string> {
    // An ID no attempt or endpoint question of the application uses: replies (errors too) are
    // routed by ID.
    let id = `${type}-${this.#nextInfo++}`;
    while (this.#attempts.has(id) || this.#endpoints.has(id)) id = `${type}-${this.#nextInfo++}`;
    return new Promise((resolve, reject) => {
      this.#info.set(id, { resolve, reject });
      this.#send(encodeRequest({ type, id })).catch((error) => {
        this.#info.delete(id);
        reject(error);
      });
    });
  }

  /** Sends a raw line (for tests and tools); the reply arrives through the usual routing. */
  sendRaw(line: string): Promise<void> {
    return this.#send(line);
  }

  #attempt(id: string, line: string): Attempt {
    if (this.#attempts.has(id)) {
      throw new Error(`Cannot start attempt: ID ${id} is already active on this client`);
    }
    if (this.#info.has(id)) {
      throw new Error(`Cannot start attempt: ID ${id} is in use by a status or report question`);
    }
    const progress = new ProgressQueue();
    let resolve!: (s: Socket) => void;
    let reject!: (e: Error) => void;
    const socket = new Promise<Socket>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    let won!: Pending["won"];
    const winner = new Promise<{ technique: TechniqueName; ms: number; via?: string } | null>((
      res,
    ) => won = res);
    this.#attempts.set(id, { progress, resolve, reject, won });
    this.#send(line).catch((error) => this.#settle(id, error));
    return {
      id,
      progress,
      socket,
      winner,
      peer: (data) => this.#send(encodeRequest({ type: "peer", id, data })),
      cancel: () => this.#send(encodeRequest({ type: "cancel", id })),
    };
  }

  #send(line: string): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new Error("Cannot send to punchd: the client is closed"));
    }
    if (this.#failure) return Promise.reject(this.#failure);
    return this.#socket.write(encoder.encode(line));
  }

  #settle(id: string, outcome: Socket | Error): void {
    const pending = this.#attempts.get(id);
    if (pending === undefined) {
      if (outcome instanceof Socket) outcome.close();
      return;
    }
    this.#attempts.delete(id);
    pending.progress.end();
    pending.won(null);
    if (outcome instanceof Socket) pending.resolve(outcome);
    else pending.reject(outcome);
  }

  #route(reply: Reply): void {
    switch (reply.type) {
      case "progress":
        this.#attempts.get(reply.id)?.progress.push(reply.data);
        return;
      case "ok": {
        if (reply.technique !== undefined) {
          this.#attempts.get(reply.id)?.won({
            technique: reply.technique,
            ms: reply.ms ?? 0,
            ...(reply.via === undefined ? {} : { via: reply.via }),
          });
        }
        const fd = this.#fds.shift();
        if (fd === undefined) {
          this.#settle(reply.id, new Error("punchd said ok but passed no socket"));
          return;
        }
        try {
          // punchd passes a blocking socket; this library does non-blocking I/O.
          setNonBlocking(fd, true);
        } catch (error) {
          new Socket(fd).close();
          this.#settle(reply.id, error as Error);
          return;
        }
        this.#settle(reply.id, new Socket(fd));
        return;
      }
      case "endpoint": {
        const waiter = this.#endpoints.get(reply.id);
        this.#endpoints.delete(reply.id);
        waiter?.resolve({
          ip: reply.ip,
          ports: reply.ports,
          source: reply.source,
          ...(reply.nat === undefined ? {} : { nat: reply.nat }),
        });
        return;
      }
      case "status":
      case "report": {
        const waiter = this.#info.get(reply.id);
        this.#info.delete(reply.id);
        waiter?.resolve(reply.json);
        return;
      }
      case "error": {
        const error = new PunchdError(reply.id, reply.reason);
        const asked = this.#info.get(reply.id);
        if (asked) {
          this.#info.delete(reply.id);
          asked.reject(error);
          return;
        }
        const waiter = this.#endpoints.get(reply.id);
        if (waiter) {
          this.#endpoints.delete(reply.id);
          waiter.reject(error);
          return;
        }
        if (this.#attempts.has(reply.id)) this.#settle(reply.id, error);
        return;
      }
    }
  }

  async #readLoop(): Promise<void> {
    // status and report replies carry up to MAX_JSON_REPLY_BYTES of JSON.
    const splitter = new LineSplitter(MAX_JSON_REPLY_BYTES + 256);
    const buf = new Uint8Array(4096);
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const received = await this.#socket.receiveWithFds(buf, 16);
        this.#fds.push(...received.fds);
        if (received.length === 0) throw new Error("punchd closed the connection");
        for (const line of splitter.push(buf.subarray(0, received.length))) {
          if (line.kind !== "line") continue;
          try {
            this.#route(decodeReply(decoder.decode(line.bytes)));
          } catch {
            // A reply this client version does not understand: ignore it.
          }
        }
      }
    } catch (error) {
      this.#failure = this.#closed
        ? new Error("Cannot use punchd client: it is closed")
        : error as Error;
      for (const id of [...this.#attempts.keys()]) this.#settle(id, this.#failure);
      for (const [id, waiter] of this.#endpoints) {
        this.#endpoints.delete(id);
        waiter.reject(this.#failure);
      }
      for (const [id, waiter] of this.#info) {
        this.#info.delete(id);
        waiter.reject(this.#failure);
      }
    }
  }

  /** Closes the connection (punchd cancels this client's attempts) and any unclaimed fds. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
    await this.#reading;
    for (const fd of this.#fds.splice(0)) new Socket(fd).close();
  }
}
