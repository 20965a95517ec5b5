/**
 * The daemon: the control server, the per-client attempt tables, and the
 * technique workers, wired through the command table.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import {
  close as closeFd,
  getIntOption,
  lockFile,
  readLink,
  setIntOption,
  unlink,
} from "../../ffi/syscalls.ts";
import {
  IPPROTO_TCP,
  SO_KEEPALIVE,
  SO_TYPE,
  SOCK_STREAM,
  SOL_SOCKET,
  TCP_KEEPCNT,
  TCP_KEEPIDLE,
  TCP_KEEPINTVL,
} from "../../ffi/constants.ts";
import { EACCES, EAGAIN, EPERM, SyscallError } from "../../ffi/errno.ts";
import { dirname } from "node:path";
import {
  decodeRequest,
  type EndpointRequest,
  type InitiateRequest,
  MAX_MESSAGE_BYTES,
  parseChoice,
  type Reply,
  type Request,
  RequestError,
  type RespondRequest,
  type TechniqueName,
  techniqueProtocol,
  TECHNIQUES,
} from "../control/codec.ts";
import { COMMANDS, permitted } from "../control/commands.ts";
import { jsonField } from "../control/codec.ts";
import { AttemptCounters, type DaemonStatus, type NatReport } from "../control/status.ts";
import { natReport } from "../discovery/report.ts";
import { techniqueAvailability } from "./capabilities.ts";
import { VERSION } from "./config.ts";
import type { ClientConnection, Line } from "../control/connection.ts";
import { ControlServer, type ControlServerOptions } from "../control/server.ts";
import { StartPacer } from "../control/pacer.ts";
import { AlreadyActiveError, StartupError } from "../errors.ts";
import { createTable, deleteTable, TABLE, withNft } from "../firewall/nftables.ts";
import { FirewallService } from "../firewall/service.ts";
import { PortPolicy, type PortPolicyOptions, type Transport } from "./ports.ts";
import { discoverEndpoint } from "../discovery/endpoint.ts";
import { EndpointCache } from "./endpoint_cache.ts";
import { classifyNat, type NatBehavior, NatBehaviorCache } from "../discovery/nat_behavior.ts";
import { AutoAttempt } from "../auto/runner.ts";
import { buildHello } from "../auto/local.ts";
import { decodeHello, type Hello } from "../auto/wire.ts";
import { interfaceAddresses } from "../../ffi/ifaddrs.ts";
import type { Logger } from "../log.ts";
import type { TcpKeepalive, TurnConfig } from "./config.ts";
import type { AttemptSpec } from "../techniques/protocol.ts";
import { TECHNIQUE_REGISTRY, type TechniqueEntry } from "../techniques/registry.ts";
import { TechniqueWorkers, type WorkerLike } from "./workers.ts";

/** Everything the daemon is configured with. */
export interface DaemonOptions {
  socketPath: string;
  /** Group of the socket file; undefined keeps the daemon's. */
  gid?: number;
  log: Logger;
  /** Milliseconds an attempt may take. */
  attemptTimeoutMs: number;
  /** Clients connected at once. */
  maxClients: number;
  /** Clients of one non-root uid connected at once (below maxClients, so one uid cannot lock out the others). */
  maxClientsPerUser: number;
  /** Firewall guards (set elements) held at once, by everyone / by one non-root uid. */
  maxGuards: number;
  maxGuardsPerUser: number;
  /** Milliseconds an idle technique worker lives on (default 30000). */
  workerIdleMs?: number;
  /** Source port rules (privileged ports, allow/deny ranges; tests inject what is in use). */
  ports?: PortPolicyOptions;
  /** Attempts one client may run at once. */
  maxAttemptsPerClient: number;
  /** Attempts all clients of one non-root uid may run at once (each holds sockets and guards). */
  maxAttemptsPerUser: number;
  /**
   * Attempt starts (`initiate`, `respond`) admitted per second, all clients together, shared
   * fairly, up to a tenth of them at once after a pause (control/pacer.ts); undefined: not
   * paced.
   */
  startRate?: number;
  /** Probe servers for endpoint discovery (none: the local endpoint is reported). */
  probes?: InetAddress[];
  /** TTL of tcp-nutss's first SYN. */
  lowTtl?: number;
  /** TCP keepalive set on handed-over TCP sockets (undefined: off). */
  tcpKeepalive?: TcpKeepalive;
  /** TURN server and credentials for the `relay` technique (undefined: no relay here). */
  turn?: TurnConfig;
  /** Let `udp` fall back to birthday probing (as `udp-birthday` always does). */
  udpBirthday?: boolean;
  /** Techniques (tests substitute workers through `spawn`). */
  registry?: Readonly<Record<TechniqueName, TechniqueEntry>>;
  spawn?: (url: URL) => WorkerLike;
  /** Effective capabilities (tests): default, read from /proc/self/status. */
  capabilities?: bigint;
}

/** A running attempt as its client's requests reach it. */
interface AttemptHandle {
  /** Delivers peer data; false when the attempt no longer takes any. */
  peer(data: string): boolean;
  cancel(reason: string): void;
}

/** How an attempt ended, for the counters: an ok (after ms, won by, relayed via) or a reason. */
type AttemptOutcome = { ms: number; winner?: string; via?: string } | string;

interface Client {
  connection: ClientConnection;
  uid: number;
  /** Attempt ID to its handle, for active attempts. */
  attempts: Map<string, AttemptHandle>;
  log: Logger;
}

/** A running punchd. */
export class Daemon {
  readonly #options: DaemonOptions;
  readonly #server: ControlServer;
  readonly #workers: TechniqueWorkers;
  readonly #registry: Readonly<Record<TechniqueName, TechniqueEntry>>;
  readonly #clients = new Set<Client>();
  /** Connected clients per uid. */
  readonly #perUid = new Map<number, number>();
  /** Running attempts per uid. */
  readonly #attemptsPerUid = new Map<number, number>();
  readonly #ports: PortPolicy;
  readonly #firewall: FirewallService | undefined;
  /** The fd holding the per-network-namespace instance lock, and its file. */
  readonly #lock: number;
  #lockPath = "";
  readonly #sessions = new Set<Promise<void>>();
  /** Paces attempt starts (`startRate`), fairly between connections. */
  readonly #pacer: StartPacer | undefined;
  /** The latest endpoint answers, for auto hellos. */
  readonly #endpoints = new EndpointCache();
  /** RFC 5780 classifications per discovery server. */
  readonly #natBehaviors = new NatBehaviorCache();
  #serving: Promise<void> | null = null;
  #nextOwner = 1;
  /** Why techniques that need the firewall cannot run, or null when they can. */
  #firewallError: string | null = null;
  #stopping: Promise<void> | null = null;
  /** Attempt counters by requested technique, for `status` and `--metrics`. */
  readonly counters = new AttemptCounters();
  readonly #startedAt = performance.now();
  /** Techniques that cannot run here, and why (missing capability, firewall, tool). */
  #unavailable = new Map<TechniqueName, string>();
  /** The report being made or made last (30 s), shared by every client that asks. */
  #report: { at: number; value: Promise<NatReport> } | null = null;

  private constructor(
    options: DaemonOptions,
    server: ControlServer,
    lock: number,
    firewallReady: boolean,
  ) {
    this.#options = options;
    this.#server = server;
    this.#lock = lock;
    this.#registry = options.registry ?? TECHNIQUE_REGISTRY;
    this.#ports = new PortPolicy(options.ports);
    this.#pacer = options.startRate === undefined ? undefined : new StartPacer({
      rate: options.startRate,
      burst: Math.max(1, Math.round(options.startRate / 10)),
    });
    this.#firewall = firewallReady
      ? new FirewallService({
        log: options.log.child({ module: "firewall" }),
        maxElements: options.maxGuards,
        maxElementsPerUid: options.maxGuardsPerUser,
      })
      : undefined;
    const workerOptions: ConstructorParameters<typeof TechniqueWorkers>[0] = {
      registry: this.#registry,
      log: options.log,
    };
    if (this.#firewall !== undefined) workerOptions.firewall = this.#firewall;
    if (options.workerIdleMs !== undefined) workerOptions.idleMs = options.workerIdleMs;
    if (options.spawn) workerOptions.spawn = options.spawn;
    this.#workers = new TechniqueWorkers(workerOptions);
  }

  /** Opens the control socket and starts serving. */
  static async start(options: DaemonOptions): Promise<Daemon> {
    const serverOptions: ControlServerOptions = { path: options.socketPath, log: options.log };
    if (options.gid !== undefined) serverOptions.gid = options.gid;
    // Order matters: a second daemon must fail on the live socket before it
    // touches the firewall table, and the table must be ready before the
    // first client can ask for an attempt.
    await ControlServer.ensureAvailable(options.socketPath, options.gid);
    const { fd: lock, path: lockPath } = takeInstanceLock(options.socketPath);
    let firewallError: string | null = null;
    const registry = options.registry ?? TECHNIQUE_REGISTRY;
    if (Object.values(registry).some((entry) => entry.technique.needsFirewall)) {
      try {
        await withNft(createTable);
        options.log.info("firewall table ready", { table: TABLE });
      } catch (error) {
        firewallError = (error as Error).message;
        options.log.warn("firewall unavailable: techniques that need it will refuse attempts", {
          error: firewallError,
        });
      }
    }
    let server: ControlServer;
    try {
      server = await ControlServer.listen(serverOptions);
    } catch (error) {
      if (firewallError === null) await withNft(deleteTable);
      closeQuietly(lock);
      throw error;
    }
    const firewallReady = firewallError === null &&
      Object.values(registry).some((entry) => entry.technique.needsFirewall);
    const daemon = new Daemon(options, server, lock, firewallReady);
    daemon.#firewallError = firewallError;
    daemon.#lockPath = lockPath;
    daemon.#unavailable = techniqueAvailability(registry, {
      firewallError,
      ...(options.capabilities === undefined ? {} : { capabilities: options.capabilities }),
    });
    daemon.counters.declare([...TECHNIQUES, "auto", "auto-udp"]);
    daemon.#serving = daemon.#serve();
    const usable = TECHNIQUES.filter((t) => !daemon.#unavailable.has(t));
    const fields: Record<string, string> = { techniques: usable.join(",") };
    if (daemon.#unavailable.size > 0) {
      fields.unavailable = [...daemon.#unavailable].map(([t, why]) => `${t}: ${why}`).join("; ");
    }
    options.log.info("punchd started", fields);
    return daemon;
  }

  /** Resolves when the daemon has stopped. */
  get finished(): Promise<void> {
    return this.#stopping ?? this.#serving ?? Promise.resolve();
  }

  /** Clients connected now. */
  get clientCount(): number {
    return this.#clients.size;
  }

  /** Attempts running now. */
  get attemptCount(): number {
    return this.#workers.running;
  }

  /** The `status` answer: state, counters, which techniques can run. */
  status(): DaemonStatus {
    const available: Record<string, true | string> = {};
    for (const t of TECHNIQUES) available[t] = this.#unavailable.get(t) ?? true;
    let attempts = 0;
    for (const client of this.#clients) attempts += client.attempts.size;
    return {
      version: VERSION,
      pid: Deno.pid,
      uptimeSecs: Math.round(performance.now() - this.#startedAt) / 1000,
      clients: this.#clients.size,
      attempts,
      guards: this.#firewall?.elements ?? 0,
      techniques: this.counters.snapshot(),
      available,
    };
  }

  /**
   * The `report` answer. One report runs at a time and its answer serves every client for
   * 30 s: a client cannot make the daemon flood the discovery servers.
   */
  report(): Promise<NatReport> {
    const now = performance.now();
    if (this.#report !== null && now - this.#report.at < 30_000) return this.#report.value;
    const value = natReport(this.#options.probes ?? [], AbortSignal.timeout(20_000));
    const entry = { at: now, value };
    this.#report = entry;
    value.catch(() => {
      if (this.#report === entry) this.#report = null;
    });
    return value;
  }

  async #serve(): Promise<void> {
    for await (const connection of this.#server.clients()) {
      const { uid, gid, pid } = connection.credentials;
      const log = this.#options.log.child({ client: connection.number });
      const mine = this.#perUid.get(uid) ?? 0;
      const refusal = this.#clients.size >= this.#options.maxClients
        ? "too many clients"
        : uid !== 0 && mine >= this.#options.maxClientsPerUser
        ? "too many clients for this user"
        : null;
      if (refusal !== null) {
        log.warn(`refusing client: ${refusal}`, { uid, gid, pid });
        // The client may be gone already (EPIPE): that is its business, not an error.
        connection.reply({ type: "error", id: "-", reason: refusal }).catch(() => {}).finally(
          () => connection.close(),
        );
        continue;
      }
      log.info("client connected", { uid, gid, pid });
      const client: Client = { connection, uid, attempts: new Map(), log };
      this.#clients.add(client);
      this.#perUid.set(uid, mine + 1);
      const session = this.#session(client).finally(() => this.#sessions.delete(session));
      this.#sessions.add(session);
    }
  }

  async #session(client: Client): Promise<void> {
    try {
      for await (const line of client.connection.lines()) {
        await this.#handle(client, line);
      }
      // End of stream. A client that only shut down writing still reads:
      // its running attempts go on and report (each has a deadline). One
      // that closed entirely gets its attempts cancelled below.
      while (client.attempts.size > 0 && !client.connection.peerGone()) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await client.connection.flushed();
    } catch (error) {
      client.log.warn("client connection failed", { error: (error as Error).message });
    } finally {
      for (const attempt of client.attempts.values()) attempt.cancel("client disconnected");
      client.attempts.clear();
      client.connection.close();
      this.#clients.delete(client);
      const left = (this.#perUid.get(client.uid) ?? 1) - 1;
      if (left > 0) this.#perUid.set(client.uid, left);
      else this.#perUid.delete(client.uid);
      client.log.info("client disconnected");
    }
  }

  /** Handles one line; never throws (a reply that cannot be written ends the session by the read side). */
  async #handle(client: Client, line: Line): Promise<void> {
    let reply: Reply | null;
    try {
      if (line.kind === "too-long") {
        throw new RequestError("-", `message longer than ${MAX_MESSAGE_BYTES} bytes`);
      }
      const request = decodeRequest(line.bytes);
      const command = COMMANDS[request.type];
      if (!permitted(command, client.connection.credentials)) {
        throw new RequestError(request.id, `${request.type} is not permitted for this user`);
      }
      if ((request.type === "initiate" || request.type === "respond") && this.#pacer) {
        await this.#pacer.take(client.connection, client.connection.signal);
      }
      reply = await this.#dispatch(client, request);
    } catch (error) {
      const id = error instanceof RequestError ? error.id : "-";
      const reason = (error as Error).message;
      client.log.debug("request refused", { id, reason });
      reply = { type: "error", id, reason };
    }
    if (reply !== null) await client.connection.reply(reply).catch(() => {});
  }

  #dispatch(client: Client, request: Request): Reply | null | Promise<Reply> {
    switch (request.type) {
      case "initiate":
      case "respond":
        this.#startAttempt(client, request);
        return null;
      case "peer": {
        const attempt = client.attempts.get(request.id);
        if (attempt === undefined || !attempt.peer(request.data)) {
          throw new RequestError(request.id, "no active attempt with this ID");
        }
        return null;
      }
      case "cancel": {
        const attempt = client.attempts.get(request.id);
        if (attempt === undefined) {
          throw new RequestError(request.id, "no active attempt with this ID");
        }
        attempt.cancel("by client");
        return null;
      }
      case "status":
        return { type: "status", id: request.id, json: jsonField(this.status()) };
      case "report":
        return this.report().then(
          (report): Reply => ({ type: "report", id: request.id, json: jsonField(report) }),
          (error) => {
            throw new RequestError(request.id, `cannot make the report: ${error.message}`);
          },
        );
      case "endpoint":
        this.#checkPorts(client, request.protocol, request.srcPorts, request.id);
        return this.#endpoint(request).then((reply) => {
          if (reply.type === "endpoint") this.#remember(request, reply);
          return reply;
        });
    }
  }

  #startAttempt(client: Client, request: InitiateRequest | RespondRequest): void {
    const { id } = request;
    if (client.attempts.has(id)) throw new RequestError(id, new AlreadyActiveError(id).message);
    if (client.attempts.size >= this.#options.maxAttemptsPerClient) {
      throw new RequestError(
        id,
        `too many active attempts (at most ${this.#options.maxAttemptsPerClient})`,
      );
    }
    const userAttempts = this.#attemptsPerUid.get(client.uid) ?? 0;
    if (client.uid !== 0 && userAttempts >= this.#options.maxAttemptsPerUser) {
      throw new RequestError(
        id,
        `too many active attempts for this user (at most ${this.#options.maxAttemptsPerUser})`,
      );
    }
    let choice: ReturnType<typeof parseChoice>;
    try {
      choice = parseChoice(request.technique);
    } catch (error) {
      throw new RequestError(id, (error as Error).message, { cause: error });
    }
    const technique = choice.kind === "single" ? choice.technique : choice.techniques[0];
    const spec: AttemptSpec = {
      technique: technique ?? "tcp-direct",
      role: request.type,
      id,
      client: client.connection.number,
      srcIp: request.srcIp,
      srcPorts: request.srcPorts,
      dstIp: request.dstIp,
      dstPorts: request.dstPorts,
      timeoutMs: this.#options.attemptTimeoutMs,
    };
    if (request.type === "respond") spec.extra = request.extra;
    if (this.#options.lowTtl !== undefined) spec.lowTtl = this.#options.lowTtl;
    if (this.#options.probes !== undefined) spec.probes = this.#options.probes.map(formatAddress);
    if (this.#options.udpBirthday) spec.birthday = true;
    const turn = this.#options.turn;
    if (turn !== undefined) {
      spec.turn = {
        server: formatAddress(turn.server),
        ...(turn.user === undefined ? {} : { user: turn.user }),
        ...(turn.password === undefined ? {} : { password: turn.password }),
        ...(turn.secret === undefined ? {} : { secret: turn.secret }),
      };
    }
    // Validate the whole request before anything starts.
    let auto: { techniques: TechniqueName[]; peerHello?: Hello } | undefined;
    try {
      if (choice.kind === "single") this.#validate(spec);
      else auto = this.#validateAuto(spec, choice.techniques, choice.protocol);
    } catch (error) {
      throw new RequestError(id, (error as Error).message, { cause: error });
    }
    const transport: Transport = choice.kind === "single"
      ? techniqueProtocol(choice.technique)
      : choice.protocol;
    const counted = choice.kind === "single"
      ? choice.technique
      : choice.protocol === "tcp"
      ? "auto"
      : "auto-udp";
    const owner = this.#nextOwner++;
    let unclaim: () => void;
    try {
      // udp attempts of one connection share a session port (one punching socket).
      const share = transport === "udp" ? `client ${client.connection.number}` : undefined;
      unclaim = this.#ports.claim(owner, client.uid, transport, request.srcPorts, share);
    } catch (error) {
      throw new RequestError(id, (error as Error).message, { cause: error });
    }
    this.#attemptsPerUid.set(client.uid, userAttempts + 1);
    let released = false;
    /** Ends the attempt's claims and counts its outcome (an ok's ms, or a failure's reason). */
    const release = (outcome?: AttemptOutcome) => {
      if (released) return;
      released = true;
      if (typeof outcome === "string") this.counters.failed(counted, outcome);
      else if (outcome !== undefined) {
        this.counters.succeeded(counted, outcome.ms, outcome.winner, outcome.via !== undefined);
      }
      unclaim();
      const left = (this.#attemptsPerUid.get(client.uid) ?? 1) - 1;
      if (left > 0) this.#attemptsPerUid.set(client.uid, left);
      else this.#attemptsPerUid.delete(client.uid);
    };
    const attemptLog = client.log.child({
      attempt: id,
      technique: request.technique,
      role: spec.role,
    });
    const started = performance.now();
    this.counters.started(counted);
    let handle: AttemptHandle;
    try {
      handle = auto === undefined
        ? this.#startWorker(spec, client, started, attemptLog, release)
        : this.#startAuto(spec, transport, auto, client, attemptLog, release);
    } catch (error) {
      release((error as Error).message);
      throw new RequestError(id, (error as Error).message, { cause: error });
    }
    client.attempts.set(id, handle);
    attemptLog.info("attempt started", {
      src: request.srcIp,
      dst: request.dstIp,
      dstPorts: request.dstPorts.join(","),
    });
  }

  /** Checks a single-technique spec: the firewall it needs, then the technique's own rules. */
  #validate(spec: AttemptSpec): void {
    const entry = this.#registry[spec.technique];
    const why = this.#unavailable.get(spec.technique);
    if (why !== undefined) throw new Error(`${spec.technique} cannot run here: ${why}`);
    entry.technique.validate(spec);
  }

  /**
   * Checks an auto request: one source port, the techniques this daemon can
   * run (those needing a firewall it lacks are left out), and, to respond,
   * the initiator's hello in EXTRA.
   */
  #validateAuto(
    spec: AttemptSpec,
    requested: readonly TechniqueName[],
    protocol: Transport,
  ): { techniques: TechniqueName[]; peerHello?: Hello } {
    if (spec.srcPorts.length !== 1) throw new RangeError("auto takes exactly one source port");
    const techniques = requested.filter((t) => !this.#unavailable.has(t));
    if (techniques.length === 0) {
      const why = [...new Set(requested.map((t) => this.#unavailable.get(t)))].join("; ");
      throw new Error(`no technique can run here: ${why}`);
    }
    if (spec.role === "initiate") return { techniques };
    let peerHello: Hello;
    try {
      peerHello = decodeHello(spec.extra ?? "");
    } catch (error) {
      throw new SyntaxError(`bad EXTRA for auto: ${(error as Error).message}`);
    }
    if (peerHello.role !== "initiate") {
      throw new SyntaxError("bad EXTRA for auto: not an initiator's hello");
    }
    if (peerHello.protocol !== protocol) {
      throw new RangeError(
        `the initiator asked for ${peerHello.protocol}, this request for ${protocol}`,
      );
    }
    return { techniques, peerHello };
  }

  /** Starts an auto attempt: hellos, plan, steps (see src/auto/runner.ts). */
  #startAuto(
    spec: AttemptSpec,
    protocol: Transport,
    auto: { techniques: TechniqueName[]; peerHello?: Hello },
    client: Client,
    attemptLog: Logger,
    release: (outcome?: AttemptOutcome) => void,
  ): AttemptHandle {
    const { id } = spec;
    const { connection } = client;
    const port = spec.srcPorts[0] ?? 0;
    let interfaces: ReturnType<typeof interfaceAddresses> = [];
    try {
      interfaces = interfaceAddresses();
    } catch (error) {
      attemptLog.warn("cannot list interface addresses", { error: (error as Error).message });
    }
    const known = this.#endpoints.get(protocol, port);
    const self = buildHello({
      role: spec.role,
      protocol,
      techniques: auto.techniques,
      srcIp: spec.srcIp,
      port,
      interfaces,
      ...(known === undefined ? {} : { known }),
      relay: this.#options.turn !== undefined,
    });
    const started = performance.now();
    const { technique: _, extra: __, ...base } = spec;
    const attempt = new AutoAttempt({
      base,
      protocol,
      self,
      ...(auto.peerHello === undefined ? {} : { peerHello: auto.peerHello }),
      log: attemptLog,
      closeFd: closeQuietly,
      host: {
        start: (stepSpec, events) => {
          this.#validate(stepSpec);
          return this.#workers.start(stepSpec, events, client.uid);
        },
        peer: (key, data) => this.#workers.peer(key, data),
        cancel: (key, reason) => this.#workers.cancel(key, reason),
      },
      events: {
        progress: (data) => {
          connection.reply({ type: "progress", id, data }).catch(() => {});
        },
        connected: (fd, local, remote, technique, via) => {
          const ms = Math.round(performance.now() - started);
          release({ ms, winner: technique, ...(via === undefined ? {} : { via }) });
          client.attempts.delete(id);
          this.#prepareHandover(fd, attemptLog);
          attemptLog.info("attempt succeeded", { local, remote, technique, ms, via });
          const ok: Reply = { type: "ok", id, technique, ms };
          if (via !== undefined) ok.via = via;
          connection.reply(ok, fd)
            .catch((error) =>
              attemptLog.warn("cannot pass socket to client", { error: (error as Error).message })
            )
            .finally(() => closeQuietly(fd));
        },
        failed: (reason) => {
          release(reason);
          client.attempts.delete(id);
          attemptLog.info("attempt failed", {
            reason,
            ms: Math.round(performance.now() - started),
          });
          connection.reply({ type: "error", id, reason }).catch(() => {});
        },
      },
    });
    attempt.start();
    return { peer: (data) => attempt.peer(data), cancel: (reason) => attempt.cancel(reason) };
  }

  /**
   * Sets what every handed-over socket carries: TCP keepalive (`--tcp-keepalive`), which keeps
   * NAT and firewall mappings of an idle connection alive and ends a dead path. A failure is
   * logged and the socket goes over as it is.
   */
  #prepareHandover(fd: number, log: Logger): void {
    const keepalive = this.#options.tcpKeepalive;
    if (keepalive === undefined) return;
    try {
      if (getIntOption(fd, SOL_SOCKET, SO_TYPE) !== SOCK_STREAM) return;
      setIntOption(fd, IPPROTO_TCP, TCP_KEEPIDLE, keepalive.idleSecs);
      setIntOption(fd, IPPROTO_TCP, TCP_KEEPINTVL, keepalive.intervalSecs);
      setIntOption(fd, IPPROTO_TCP, TCP_KEEPCNT, keepalive.count);
      setIntOption(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    } catch (error) {
      log.warn("cannot set TCP keepalive", { error: (error as Error).message });
    }
  }

  /** Remembers an endpoint answer for auto hellos from that port. */
  #remember(request: EndpointRequest, reply: Extract<Reply, { type: "endpoint" }>): void {
    if (request.srcPorts.length !== 1) return;
    this.#endpoints.set(request.protocol, request.srcPorts[0] ?? 0, {
      ip: reply.ip,
      ports: reply.ports,
      how: reply.source,
      ...(reply.nat === undefined ? {} : { nat: reply.nat }),
    });
  }

  #startWorker(
    spec: AttemptSpec,
    client: Client,
    started: number,
    attemptLog: Logger,
    release: (outcome?: AttemptOutcome) => void,
  ): AttemptHandle {
    const { id } = spec;
    const { connection } = client;
    const key = this.#workers.start(spec, {
      progress: (data) => {
        connection.reply({ type: "progress", id, data }).catch(() => {});
      },
      connected: (fd, local, remote, via) => {
        const ms = Math.round(performance.now() - started);
        release({ ms, ...(via === undefined ? {} : { via }) });
        client.attempts.delete(id);
        this.#prepareHandover(fd, attemptLog);
        attemptLog.info("attempt succeeded", { local, remote, ms, via });
        // A relayed connection says so (and through which server), even for a single request.
        const ok: Reply = via === undefined
          ? { type: "ok", id }
          : { type: "ok", id, technique: spec.technique, ms, via };
        connection.reply(ok, fd)
          .catch((error) =>
            attemptLog.warn("cannot pass socket to client", { error: (error as Error).message })
          )
          .finally(() => closeQuietly(fd));
      },
      failed: (reason) => {
        release(reason);
        client.attempts.delete(id);
        attemptLog.info("attempt failed", { reason, ms: Math.round(performance.now() - started) });
        connection.reply({ type: "error", id, reason }).catch(() => {});
      },
    }, client.uid);
    return {
      peer: (data) => this.#workers.peer(key, data),
      cancel: (reason) => this.#workers.cancel(key, reason),
    };
  }

  /** Refuses source ports the client may not have punchd bind (see ports.ts). */
  #checkPorts(client: Client, transport: Transport, ports: readonly number[], id: string): void {
    try {
      this.#ports.check(client.uid, transport, ports);
    } catch (error) {
      throw new RequestError(id, (error as Error).message, { cause: error });
    }
  }

  /**
   * The endpoint to publish: observed through the probe servers and
   * predicted for the next flow from each port; without probe servers, the
   * local endpoint after checking that each port can be bound.
   */
  async #endpoint(request: EndpointRequest): Promise<Reply> {
    const { id, srcIp, srcPorts, protocol } = request;
    const probes = (this.#options.probes ?? []).filter((p) =>
      p.family === (srcIp.includes(":") ? "inet6" : "inet")
    );
    if (probes.length === 0) {
      if (srcIp === "0.0.0.0" || srcIp === "::") {
        throw new RequestError(id, "SRC_IP is unspecified and no probe server is configured");
      }
      for (const port of srcPorts) {
        const address = inetAddress(srcIp, port);
        // No SO_REUSEPORT: the check must never join another socket's group.
        const socket = Socket.create(address.family, protocol === "tcp" ? "stream" : "datagram", {
          reuseAddress: true,
        });
        try {
          socket.bind(address);
        } catch (error) {
          throw new RequestError(
            id,
            `cannot use ${protocol} port ${port}: ${(error as Error).message}`,
          );
        } finally {
          socket.close();
        }
      }
      return { type: "endpoint", id, ip: srcIp, ports: srcPorts, source: "local" };
    }
    const signal = AbortSignal.timeout(8000);
    try {
      // RFC 5780 first, from a fresh port: its flows must not come between the prediction's.
      const nat = protocol === "udp" ? await this.#natBehavior(srcIp, probes, signal) : null;
      const { ip, ports, how } = await discoverEndpoint(protocol, srcIp, srcPorts, probes, signal);
      const reply: Reply = { type: "endpoint", id, ip, ports, source: how };
      if (nat !== null) reply.nat = `${nat.mapping},${nat.filtering}`;
      return reply;
    } catch (error) {
      throw new RequestError(id, `cannot discover the endpoint: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  /**
   * The NAT's RFC 5780 behaviour toward the first of `servers` (cached per server for 10 min);
   * null when that server has no alternate address or the tests fail (logged: the endpoint
   * answer goes on without it).
   */
  async #natBehavior(
    srcIp: string,
    servers: readonly InetAddress[],
    signal: AbortSignal,
  ): Promise<NatBehavior | null> {
    const server = servers[0];
    if (server === undefined) return null;
    try {
      const behavior = await this.#natBehaviors.get(
        srcIp,
        server,
        () => classifyNat(srcIp, server, signal),
      );
      if (behavior !== null) {
        this.#options.log.debug("NAT behaviour (RFC 5780)", {
          server: formatAddress(server),
          mapping: behavior.mapping,
          filtering: behavior.filtering,
        });
      }
      return behavior;
    } catch (error) {
      this.#options.log.info("cannot classify the NAT (RFC 5780)", {
        server: formatAddress(server),
        error: (error as Error).message,
      });
      return null;
    }
  }

  /** Stops accepting, cancels every attempt, disconnects clients, removes the socket file. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#options.log.info("punchd stopping");
      this.#server.stop();
      this.#pacer?.close();
      this.#workers.shutdown();
      // Give the cancellation replies a moment to reach their clients: an attempt that held
      // firewall guards reports once they are removed (an nft run, slow on a loaded host), so
      // wait for that too, at most 5 s.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([
          this.#workers.cleaned(),
          ...[...this.#clients].map((c) =>
            c.connection.reply({ type: "error", id: "-", reason: "daemon shutting down" })
          ),
        ]).then(() => Promise.allSettled([...this.#clients].map((c) => c.connection.flushed()))),
        new Promise((resolve) => timer = setTimeout(resolve, 5000)),
      ]);
      clearTimeout(timer);
      for (const client of this.#clients) client.connection.close();
      await this.#serving;
      await Promise.allSettled([...this.#sessions]);
      await this.#workers.cleaned();
      if (this.#firewall !== undefined) {
        await this.#firewall.close();
        await withNft(deleteTable);
      }
      // Like a pid file: removed on a clean stop (a killed daemon's stays, unlocked, for reuse).
      try {
        unlink(this.#lockPath);
      } catch {
        // Already gone.
      }
      closeQuietly(this.#lock);
      this.#options.log.info("punchd stopped");
    })();
    return this.#stopping;
  }
}

/**
 * The per-network-namespace instance lock: a file in `dir` (default /run,
 * writable by root only, so no user can take the lock first), named after
 * the namespace's inode, locked with flock while the daemon runs.
 */
export function instanceLockPath(dir = "/run"): string {
  const ns = readLink("/proc/self/ns/net").match(/^net:\[(\d+)\]$/)?.[1];
  if (ns === undefined) throw new StartupError("Cannot identify this network namespace");
  return `${dir}/punchd-net-${ns}.lock`;
}

/**
 * Takes the instance lock: two daemons in one namespace would share (and
 * delete) one nftables table. The kernel releases the lock when the daemon
 * exits, however it exits. Returns the fd that holds it and the file.
 *
 * A daemon that may not write /run (a service account with only
 * CAP_NET_ADMIN and CAP_NET_RAW) takes it in the socket's directory
 * instead, which ControlServer.ensureAvailable has checked is writable by
 * root or the daemon only: no other user can take it first there either.
 */
function takeInstanceLock(socketPath: string): { fd: number; path: string } {
  let path = "";
  const fallback = dirname(socketPath);
  for (const dir of ["/run", fallback]) {
    try {
      path = instanceLockPath(dir);
      return { fd: lockFile(path), path };
    } catch (error) {
      if (error instanceof SyscallError && error.errno === EAGAIN) {
        throw new StartupError(
          "Cannot start: another punchd runs in this network namespace (it owns the firewall table)",
        );
      }
      if (error instanceof StartupError) throw error;
      const denied = error instanceof SyscallError &&
        (error.errno === EACCES || error.errno === EPERM);
      if (denied && dir !== fallback) continue;
      throw new StartupError(`Cannot take the instance lock ${path}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  throw new StartupError(`Cannot take the instance lock ${path}`);
}

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // Already closed.
  }
}
