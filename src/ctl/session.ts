/**
 * A whole hole punching session through a punchd rendezvous server, as the
 * example peer and `punchctl connect`/`listen` run it: register the peer ID
 * at the rendezvous server, ask punchd for the endpoint to publish and
 * publish it, then initiate an attempt to a peer ({@linkcode Session.connect})
 * or wait for a peer's attempt and answer it ({@linkcode Session.accept}),
 * relaying the attempt's progress both ways, until punchd hands over the
 * connected socket.
 *
 * ```ts
 * await using session = await Session.open({ punchdSocket, rendezvous, id: "alice", localIp, port: 4000, technique: "auto" });
 * const { socket, technique, ms } = await session.connect("bob");
 * ```
 *
 * Through the rendezvous server the initiator sends its peer
 * `punch|ATTEMPT|TECHNIQUE|IP|PORTS|DATA` for punchd's first progress reply;
 * the responder answers with `respond` (DST = IP/PORTS, EXTRA = DATA). Later
 * progress of either side travels as `peer|ATTEMPT|DATA` and is handed to
 * punchd with `peer`.
 *
 * It sits above `rendezvous/` and `client/` (it uses both), beside the
 * programs that use it.
 *
 * @module
 */

import { type Attempt, PunchdClient } from "../client/client.ts";
import type { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress } from "../../ffi/structs.ts";
import {
  parseChoice,
  type Protocol,
  type TechniqueChoice,
  techniqueProtocol,
} from "../control/codec.ts";
import { RendezvousClient } from "../rendezvous/client.ts";

/** What a session did, in order, for status output. */
export type SessionEvent =
  /** Registered at the rendezvous server and published the endpoint punchd gave. */
  | { kind: "registered"; id: string; ip: string; ports: number[]; source: string }
  /** Waiting for a peer to initiate (accept). */
  | { kind: "waiting" }
  /** The peer's published endpoint; initiating an attempt to it (connect). */
  | { kind: "initiating"; peer: string; ip: string; ports: number[]; technique: TechniqueChoice }
  /** A peer initiates (accept). */
  | { kind: "incoming"; peer: string; ip: string; ports: string; technique: TechniqueChoice }
  /** A notification that is no attempt (accept keeps waiting). */
  | { kind: "ignored"; from: string; payload: string }
  /** punchd's progress data, sent to the peer. */
  | { kind: "progress"; data: string }
  /** The peer's later progress data, handed to punchd. */
  | { kind: "peer"; data: string }
  /** punchd handed over the connected socket. */
  | {
    kind: "connected";
    peer: string;
    technique: string;
    ms: number;
    local: string;
    remote: string;
  };

/** One status line for a session event (the example peer prints these). */
export function describeEvent(event: SessionEvent): string {
  switch (event.kind) {
    case "registered":
      return `registered as ${event.id}, published ${event.ip} ${
        event.ports.join(",")
      } (${event.source})`;
    case "waiting":
      return "waiting for a peer";
    case "initiating":
      return `${event.peer} published ${event.ip} ${
        event.ports.join(",")
      }; initiating ${event.technique}`;
    case "incoming":
      return `${event.peer} initiates ${event.technique} from ${event.ip} ${event.ports}`;
    case "ignored":
      return `ignoring a notification from ${event.from}: ${event.payload.slice(0, 60)}`;
    case "progress":
      return `progress to the peer: ${event.data}`;
    case "peer":
      return `progress from the peer: ${event.data}`;
    case "connected":
      return `connected to ${event.peer} with ${event.technique} in ${event.ms} ms: local ${event.local}, remote ${event.remote}`;
  }
}

/** The transport a technique choice punches. */
export function protocolOf(technique: TechniqueChoice): Protocol {
  const choice = parseChoice(technique);
  return choice.kind === "auto" ? choice.protocol : techniqueProtocol(choice.technique);
}

/** Options of {@linkcode Session.open}. */
export interface SessionOptions {
  /** punchd's control socket. */
  punchdSocket: string;
  /** The rendezvous server. */
  rendezvous: InetAddress;
  /** This peer's ID at the rendezvous server. */
  id: string;
  /** The ID's credential (token or binding secret), when registering with one. */
  credential?: string;
  /** The local address and port punchd binds for this peer's attempts. */
  localIp: string;
  port: number;
  /** One technique, `auto`, `auto-udp`, or a list. */
  technique: TechniqueChoice;
  /** Cancels an attempt still running after this long (punchd's own limit applies too). */
  attemptTimeoutMs?: number;
  /** The uid punchd must run as (see PunchdClient.connect; default 0). */
  daemonUid?: number;
  /** Receives each step, for status output. */
  onEvent?: (event: SessionEvent) => void;
}

/** A punched connection. */
export interface Punched {
  /** The connected socket (close it when done). */
  socket: Socket;
  /** The peer's ID. */
  peer: string;
  /** The technique that connected. */
  technique: string;
  protocol: Protocol;
  /** Milliseconds from the start of the attempt to the socket. */
  ms: number;
}

/**
 * A registration at the rendezvous server with a connection to punchd; one
 * attempt at a time.
 */
export class Session {
  readonly #options: SessionOptions;
  readonly #punchd: PunchdClient;
  readonly #rendezvous: RendezvousClient;
  /** The endpoint published for this peer. */
  readonly endpoint: { ip: string; ports: number[] };
  /** The transport of the session's technique. */
  readonly protocol: Protocol;
  #closed = false;

  private constructor(
    options: SessionOptions,
    punchd: PunchdClient,
    rendezvous: RendezvousClient,
    endpoint: { ip: string; ports: number[] },
  ) {
    this.#options = options;
    this.#punchd = punchd;
    this.#rendezvous = rendezvous;
    this.endpoint = endpoint;
    this.protocol = protocolOf(options.technique);
  }

  /**
   * Connects to the rendezvous server and registers, connects to punchd, asks
   * it for the endpoint to publish and publishes it. `signal` bounds it all.
   */
  static async open(options: SessionOptions, signal?: AbortSignal): Promise<Session> {
    const protocol = protocolOf(options.technique);
    let rendezvous: RendezvousClient;
    try {
      rendezvous = await RendezvousClient.connect(options.rendezvous, signal);
    } catch (error) {
      throw new Error(
        `Cannot connect to the rendezvous server ${formatAddress(options.rendezvous)}: ${
          (error as Error).message
        }`,
        { cause: error },
      );
    }
    let punchd: PunchdClient | undefined;
    try {
      await bounded(rendezvous.register(options.id, options.credential), signal);
      punchd = await PunchdClient.connect(
        options.punchdSocket,
        options.daemonUid === undefined ? {} : { daemonUid: options.daemonUid },
      );
      const me = await bounded(
        punchd.endpoint(controlId(`${options.id}-endpoint`), protocol, options.localIp, [
          options.port,
        ]),
        signal,
      );
      await bounded(rendezvous.publish(protocol, me.ip, me.ports), signal);
      options.onEvent?.({
        kind: "registered",
        id: options.id,
        ip: me.ip,
        ports: me.ports,
        source: me.source,
      });
      return new Session(options, punchd, rendezvous, { ip: me.ip, ports: me.ports });
    } catch (error) {
      await punchd?.close();
      await rendezvous.close();
      throw error;
    }
  }

  #event(event: SessionEvent): void {
    this.#options.onEvent?.(event);
  }

  /** Initiates an attempt to `peer` (looked up at the rendezvous server). */
  async connect(peer: string, signal?: AbortSignal): Promise<Punched> {
    const o = this.#options;
    const target = await bounded(this.#rendezvous.query(peer, this.protocol), signal);
    this.#event({
      kind: "initiating",
      peer,
      ip: target.ip,
      ports: target.ports,
      technique: o.technique,
    });
    const started = performance.now();
    const attemptId = controlId(`${o.id}-${Date.now().toString(36)}`, "end");
    const attempt = this.#punchd.initiate({
      id: attemptId,
      technique: o.technique,
      srcIp: o.localIp,
      srcPorts: [o.port],
      dstIp: target.ip,
      dstPorts: target.ports,
    });
    // Awaited in #relay; until then (or when notifying the peer fails) a rejection is not unhandled.
    attempt.socket.catch(() => {});
    const progress = attempt.progress[Symbol.asyncIterator]();
    const first = await progress.next();
    if (!first.done) {
      this.#event({ kind: "progress", data: first.value });
      try {
        await bounded(
          this.#rendezvous.notify(
            peer,
            `punch|${attemptId}|${o.technique}|${this.endpoint.ip}|${
              this.endpoint.ports.join(",")
            }|${first.value}`,
          ),
          signal,
        );
      } catch (error) {
        // The peer never hears of the attempt: stop it rather than let it run out its time.
        await attempt.cancel().catch(() => {});
        throw error;
      }
    }
    const socket = await this.#relay(attempt, progress, peer, attemptId, signal);
    return this.#punched(socket, attempt, peer, o.technique, started);
  }

  /** Waits for a peer's attempt (`punch|...`) and answers it. `signal` bounds the wait. */
  async accept(signal?: AbortSignal): Promise<Punched> {
    const o = this.#options;
    this.#event({ kind: "waiting" });
    for (;;) {
      const note = await this.#rendezvous.nextNotification(signal);
      const [kind, attemptId, technique, ip, ports, data] = note.payload.split("|");
      let name: TechniqueChoice | undefined;
      try {
        if (technique !== undefined) {
          parseChoice(technique);
          name = technique as TechniqueChoice;
        }
      } catch {
        name = undefined;
      }
      if (
        kind !== "punch" || attemptId === undefined || name === undefined || ip === undefined ||
        ports === undefined || data === undefined
      ) {
        this.#event({ kind: "ignored", from: note.from, payload: note.payload });
        continue;
      }
      this.#event({ kind: "incoming", peer: note.from, ip, ports, technique: name });
      const started = performance.now();
      const attempt = this.#punchd.respond({
        id: controlId(`${note.from}-${attemptId}`),
        technique: name,
        srcIp: o.localIp,
        srcPorts: [o.port],
        dstIp: ip,
        dstPorts: ports.split(",").map(Number),
        extra: data,
      });
      const socket = await this.#relay(
        attempt,
        attempt.progress[Symbol.asyncIterator](),
        note.from,
        attemptId,
        undefined,
      );
      return this.#punched(socket, attempt, note.from, name, started);
    }
  }

  async #punched(
    socket: Socket,
    attempt: Attempt,
    peer: string,
    choice: TechniqueChoice,
    started: number,
  ): Promise<Punched> {
    const ms = Math.round(performance.now() - started);
    const technique = (await attempt.winner)?.technique ?? choice;
    try {
      this.#event({
        kind: "connected",
        peer,
        technique,
        ms,
        local: formatAddress(socket.localAddress()),
        remote: formatAddress(socket.peerAddress()),
      });
    } catch (error) {
      socket.close();
      throw error;
    }
    return { socket, peer, technique, protocol: protocolOf(technique as TechniqueChoice), ms };
  }

  /**
   * Relays an attempt's later rounds: punchd's progress goes to the peer as
   * `peer|ATTEMPT|DATA`, and the peer's `peer|ATTEMPT|DATA` goes to punchd,
   * until the attempt ends (techniques such as tcp-syni need a round back).
   * Cancels the attempt when `signal` aborts or the attempt timeout passes.
   */
  async #relay(
    attempt: Attempt,
    progress: AsyncIterator<string>,
    peer: string,
    attemptId: string,
    signal: AbortSignal | undefined,
  ): Promise<Socket> {
    const done = new AbortController();
    const outgoing = (async () => {
      for (let next = await progress.next(); !next.done; next = await progress.next()) {
        this.#event({ kind: "progress", data: next.value });
        // A peer that already has its connection may have left the server ("unknown peer"):
        // it needs no more of ours, and the attempt's outcome comes from punchd, not from here.
        await this.#rendezvous.notify(peer, `peer|${attemptId}|${next.value}`).catch(() => {});
      }
    })();
    const incoming = (async () => {
      for (;;) {
        const note = await this.#rendezvous.nextNotification(done.signal);
        const [kind, id, data] = note.payload.split("|");
        if (note.from === peer && kind === "peer" && id === attemptId && data !== undefined) {
          this.#event({ kind: "peer", data });
          await attempt.peer(data);
        }
      }
    })().catch(() => {});
    const timeoutMs = this.#options.attemptTimeoutMs;
    const timeout = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs);
    const limits = [signal, timeout].filter((s): s is AbortSignal => s !== undefined);
    const stop = AbortSignal.any(limits);
    const cancel = () => {
      if (!done.signal.aborted) attempt.cancel().catch(() => {});
    };
    stop.addEventListener("abort", cancel, { once: true });
    try {
      return await attempt.socket;
    } catch (error) {
      if (!stop.aborted) throw error;
      // punchd says "cancelled: by client"; say why this side cancelled.
      const why = timeout?.aborted
        ? `no connection within ${(timeoutMs ?? 0) / 1000} s`
        : (signal?.reason as Error)?.message ?? "cancelled";
      throw new Error(`Cannot connect to ${peer}: ${why}`, { cause: error });
    } finally {
      stop.removeEventListener("abort", cancel);
      done.abort();
      await Promise.allSettled([outgoing, incoming]);
    }
  }

  /** Closes the connections to punchd and to the rendezvous server (unregistering). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#punchd.close();
    await this.#rendezvous.close();
  }

  /** Same as close(). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * An ID fit for the control socket (at most 64 of `A-Z a-z 0-9 _ . : @ + -`) made from `text`,
 * which may hold other characters of a peer ID; keeps its start or its end.
 */
function controlId(text: string, keep: "start" | "end" = "start"): string {
  const clean = text.replace(/[^A-Za-z0-9_.:@+-]/g, "_");
  return keep === "start" ? clean.slice(0, 64) : clean.slice(-64);
}

/** `promise`, or the signal's reason once it aborts (the operation itself goes on). */
function bounded<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
}
