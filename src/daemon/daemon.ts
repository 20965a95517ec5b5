/**
 * The daemon: the control server, the per-client attempt tables, and the
 * technique workers, wired through the command table.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { close as closeFd, lockFile, readLink, unlink } from "../../ffi/syscalls.ts";
import { EAGAIN, SyscallError } from "../../ffi/errno.ts";
import {
  decodeRequest,
  type EndpointRequest,
  type InitiateRequest,
  MAX_MESSAGE_BYTES,
  type Reply,
  type Request,
  RequestError,
  type RespondRequest,
  type TechniqueName,
  TECHNIQUES,
} from "../control/codec.ts";
import { COMMANDS, permitted } from "../control/commands.ts";
import type { ClientConnection, Line } from "../control/connection.ts";
import { ControlServer, type ControlServerOptions } from "../control/server.ts";
import { AlreadyActiveError, StartupError } from "../errors.ts";
import { createTable, deleteTable, TABLE } from "../firewall/nftables.ts";
import { FirewallService } from "../firewall/service.ts";
import { PortPolicy, type PortPolicyOptions, type Transport } from "./ports.ts";
import { combine, observeTcp, observeUdp, predict } from "./discovery.ts";
import type { Logger } from "../log.ts";
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
  /** Probe servers for endpoint discovery (none: the local endpoint is reported). */
  probes?: InetAddress[];
  /** TTL of tcp-nutss's first SYN. */
  lowTtl?: number;
  /** Let `udp` fall back to birthday probing (as `udp-birthday` always does). */
  udpBirthday?: boolean;
  /** Techniques (tests substitute workers through `spawn`). */
  registry?: Readonly<Record<TechniqueName, TechniqueEntry>>;
  spawn?: (url: URL) => WorkerLike;
}

interface Client {
  connection: ClientConnection;
  uid: number;
  /** Attempt ID to worker key, for active attempts. */
  attempts: Map<string, number>;
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
  /** The fd holding the per-network-namespace instance lock. */
  readonly #lock: number;
  readonly #sessions = new Set<Promise<void>>();
  #serving: Promise<void> | null = null;
  #nextOwner = 1;
  /** Why techniques that need the firewall cannot run, or null when they can. */
  #firewallError: string | null = null;
  #stopping: Promise<void> | null = null;

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
    const lock = takeInstanceLock();
    let firewallError: string | null = null;
    const registry = options.registry ?? TECHNIQUE_REGISTRY;
    if (Object.values(registry).some((entry) => entry.technique.needsFirewall)) {
      try {
        await createTable();
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
      if (firewallError === null) await deleteTable();
      closeQuietly(lock);
      throw error;
    }
    const firewallReady = firewallError === null &&
      Object.values(registry).some((entry) => entry.technique.needsFirewall);
    const daemon = new Daemon(options, server, lock, firewallReady);
    daemon.#firewallError = firewallError;
    daemon.#serving = daemon.#serve();
    options.log.info("punchd started", { techniques: TECHNIQUES.join(",") });
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
      for (const key of client.attempts.values()) this.#workers.cancel(key, "client disconnected");
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
        const key = client.attempts.get(request.id);
        if (key === undefined || !this.#workers.peer(key, request.data)) {
          throw new RequestError(request.id, "no active attempt with this ID");
        }
        return null;
      }
      case "cancel": {
        const key = client.attempts.get(request.id);
        if (key === undefined) throw new RequestError(request.id, "no active attempt with this ID");
        this.#workers.cancel(key, "by client");
        return null;
      }
      case "endpoint":
        this.#checkPorts(client, request.protocol, request.srcPorts, request.id);
        return this.#endpoint(request);
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
    const spec: AttemptSpec = {
      technique: request.technique,
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
    const entry = this.#registry[request.technique];
    if (entry.technique.needsFirewall && this.#firewallError !== null) {
      throw new RequestError(
        id,
        `${request.technique} needs punchd's nftables table: ${this.#firewallError}`,
      );
    }
    try {
      entry.technique.validate(spec);
    } catch (error) {
      throw new RequestError(id, (error as Error).message, { cause: error });
    }
    const transport: Transport = request.technique.startsWith("udp") ? "udp" : "tcp";
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
    const release = () => {
      if (released) return;
      released = true;
      unclaim();
      const left = (this.#attemptsPerUid.get(client.uid) ?? 1) - 1;
      if (left > 0) this.#attemptsPerUid.set(client.uid, left);
      else this.#attemptsPerUid.delete(client.uid);
    };
    const attemptLog = client.log.child({
      attempt: id,
      technique: spec.technique,
      role: spec.role,
    });
    const started = performance.now();
    let key: number;
    try {
      key = this.#startWorker(spec, client, started, attemptLog, release);
    } catch (error) {
      release();
      throw new RequestError(id, (error as Error).message, { cause: error });
    }
    client.attempts.set(id, key);
    attemptLog.info("attempt started", {
      src: request.srcIp,
      dst: request.dstIp,
      dstPorts: request.dstPorts.join(","),
    });
  }

  #startWorker(
    spec: AttemptSpec,
    client: Client,
    started: number,
    attemptLog: Logger,
    release: () => void,
  ): number {
    const { id } = spec;
    const { connection } = client;
    return this.#workers.start(spec, {
      progress: (data) => {
        connection.reply({ type: "progress", id, data }).catch(() => {});
      },
      connected: (fd, local, remote) => {
        release();
        client.attempts.delete(id);
        attemptLog.info("attempt succeeded", {
          local,
          remote,
          ms: Math.round(performance.now() - started),
        });
        connection.reply({ type: "ok", id }, fd)
          .catch((error) =>
            attemptLog.warn("cannot pass socket to client", { error: (error as Error).message })
          )
          .finally(() => closeQuietly(fd));
      },
      failed: (reason) => {
        release();
        client.attempts.delete(id);
        attemptLog.info("attempt failed", { reason, ms: Math.round(performance.now() - started) });
        connection.reply({ type: "error", id, reason }).catch(() => {});
      },
    }, client.uid);
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
    const signal = AbortSignal.timeout(5000);
    const observe = protocol === "tcp" ? observeTcp : observeUdp;
    try {
      const predictions = [];
      for (const port of srcPorts) {
        const local = inetAddress(srcIp, port);
        const observations = [];
        // In order, one after another: the order is what reveals a port delta.
        for (const probe of probes) observations.push(await observe(local, probe, signal));
        predictions.push(predict(port, observations));
      }
      const { ip, ports, how } = combine(predictions);
      return { type: "endpoint", id, ip, ports, source: how };
    } catch (error) {
      throw new RequestError(id, `cannot discover the endpoint: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  /** Stops accepting, cancels every attempt, disconnects clients, removes the socket file. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#options.log.info("punchd stopping");
      this.#server.stop();
      this.#workers.shutdown();
      // Give the cancellation replies a moment to reach their clients.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled(
          [...this.#clients].map((c) =>
            c.connection.reply({ type: "error", id: "-", reason: "daemon shutting down" })
          ),
        ),
        new Promise((resolve) => timer = setTimeout(resolve, 500)),
      ]);
      clearTimeout(timer);
      for (const client of this.#clients) client.connection.close();
      await this.#serving;
      await Promise.allSettled([...this.#sessions]);
      await this.#workers.cleaned();
      if (this.#firewall !== undefined) {
        await this.#firewall.flushed();
        await deleteTable();
      }
      // Like a pid file: removed on a clean stop (a killed daemon's stays, unlocked, for reuse).
      try {
        unlink(instanceLockPath());
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
 * The per-network-namespace instance lock: a file in /run (writable by root
 * only, so no user can take the lock first), named after the namespace's
 * inode, locked with flock while the daemon runs.
 */
export function instanceLockPath(): string {
  const ns = readLink("/proc/self/ns/net").match(/^net:\[(\d+)\]$/)?.[1];
  if (ns === undefined) throw new StartupError("Cannot identify this network namespace");
  return `/run/punchd-net-${ns}.lock`;
}

/**
 * Takes the instance lock: two daemons in one namespace would share (and
 * delete) one nftables table. The kernel releases the lock when the daemon
 * exits, however it exits. Returns the fd that holds it.
 */
function takeInstanceLock(): number {
  let path = "";
  try {
    path = instanceLockPath();
    return lockFile(path);
  } catch (error) {
    if (error instanceof SyscallError && error.errno === EAGAIN) {
      throw new StartupError(
        "Cannot start: another punchd runs in this network namespace (it owns the firewall table)",
      );
    }
    if (error instanceof StartupError) throw error;
    throw new StartupError(`Cannot take the instance lock ${path}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // Already closed.
  }
}
