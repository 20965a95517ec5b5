/**
 * Runs inside a technique worker: many attempts of one technique at once,
 * each with its own AbortController and deadline, exactly one terminal
 * message (`connected` or `failed`) per started attempt.
 *
 * Starts take fair turns between clients (control/turns.ts, one start per
 * turn of the worker's event loop, the client served least recently first):
 * a client with hundreds of attempts starting cannot make another client's
 * attempt wait behind all of them, nor the guard answers and peer data of
 * running attempts, which are handled at once. A start cancelled while it
 * waits for its turn fails at once with the cancel's reason.
 *
 * @module
 */

import { formatAddress } from "../../ffi/structs.ts";
import type { Socket } from "../../ffi/socket.ts";
import { observeFds } from "../../ffi/fd_ledger.ts";
import { setNonBlocking } from "../../ffi/syscalls.ts";
import { sanitizeReason } from "../control/codec.ts";
import { AttemptTimeoutError, CancelledError } from "../errors.ts";
import { Logger, parseLevel } from "../log.ts";
import type { FromWorker, ToWorker } from "./protocol.ts";
import type { AttemptFirewall, Technique } from "./technique.ts";
import { type Guard, guardKey } from "../firewall/guards.ts";
import { collectGarbage } from "./heap.ts";
import { TurnScheduler } from "../control/turns.ts";

/** The worker global's messaging surface (a subset of DedicatedWorkerGlobalScope). */
export interface WorkerPort {
  postMessage(message: FromWorker): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
}

interface Running {
  controller: AbortController;
  peerData: string[];
  peerWaiters: ((data: string) => void)[];
  timer: ReturnType<typeof setTimeout>;
}

/** The reason a client sees for an error thrown by a technique. */
export function failureReason(error: unknown): string {
  if (error instanceof Error) return sanitizeReason(error.message);
  return sanitizeReason(String(error));
}

/** Milliseconds without attempts after which a worker collects its garbage. */
const COLLECT_AFTER_MS = 1000;
/** Attempts after which a worker that never idles collects its garbage all the same. */
const COLLECT_EVERY = 1000;

/** Serves `technique` on `port` (the worker's global scope). */
export function hostTechnique(technique: Technique, port: WorkerPort): void {
  const running = new Map<number, Running>();
  /** Starts waiting for their turn, by key. */
  const pending = new Map<number, AbortController>();
  const turns = new TurnScheduler();
  /** One turn owner per client, while the client has starts waiting. */
  const owners = new Map<number, { waiting: number }>();
  // A burst's garbage stays in the isolate's heap while the worker lives on idle (--worker-idle):
  // collect it once no attempt has run for a moment.
  let collect: ReturnType<typeof setTimeout> | undefined;
  let ended = 0;
  const collectLater = () => {
    clearTimeout(collect);
    collect = setTimeout(() => {
      if (running.size === 0) collectGarbage();
    }, COLLECT_AFTER_MS);
  };
  const post = (message: FromWorker) => port.postMessage(message);
  /**
   * Guards the daemon put in from an attempt's plan (workers.ts), by key: once its `planned`
   * message came, the handles of the guards not yet handed to the technique, by guardKey.
   */
  const planned = new Map<number, {
    arrived: Promise<Map<string, number[]>>;
    arrive(handles: Map<string, number[]>): void;
    fail(error: Error): void;
  }>();
  const expectPlanned = (key: number) => {
    let arrive!: (handles: Map<string, number[]>) => void;
    let fail!: (error: Error) => void;
    const arrived = new Promise<Map<string, number[]>>((resolve, reject) => {
      arrive = resolve;
      fail = reject;
    });
    arrived.catch(() => {});
    const entry = { arrived, arrive, fail };
    planned.set(key, entry);
    return entry;
  };
  /** Guard requests waiting for the daemon's answer. */
  const requests = new Map<number, { resolve(handles: number[]): void; reject(e: Error): void }>();
  let nextRequest = 1;
  const ask = (message: FromWorker & { request: number }) =>
    new Promise<number[]>((resolve, reject) => {
      requests.set(message.request, { resolve, reject });
      post(message);
    });
  observeFds({
    opened: (fd, kind, identity) =>
      post({ type: "fd", fd, kind, ...(identity === null ? {} : { identity }) }),
    released: (fd) => post({ type: "fd", fd, kind: null }),
  });

  const start = async (key: number, message: Extract<ToWorker, { type: "start" }>) => {
    const { spec } = message;
    const controller = new AbortController();
    const attempt: Running = {
      controller,
      peerData: [],
      peerWaiters: [],
      timer: setTimeout(
        () => controller.abort(new AttemptTimeoutError(spec.timeoutMs)),
        spec.timeoutMs,
      ),
    };
    running.set(key, attempt);
    const log = new Logger(
      parseLevel(message.logLevel),
      (record) => post({ type: "log", record }),
      { client: spec.client, attempt: spec.id, technique: technique.name, role: spec.role },
    );
    let outcome: { message: FromWorker; socket?: Socket } = {
      message: { type: "failed", key, reason: "attempt ended without a result" },
    };
    // The daemon removes every guard when the attempt ends: no cleanup here.
    // Guards asked for in the same turn (a flow's three, every flow's at once) travel in one
    // request and go into the kernel in one batch: one round trip to the daemon, not one each.
    let asked: { guard: Guard; resolve(handle: number): void; reject(e: Error): void }[] = [];
    const sendAsked = () => {
      const batch = asked;
      asked = [];
      ask({ type: "guard", key, request: nextRequest++, guards: batch.map((a) => a.guard) }).then(
        (handles) => {
          for (const [i, a] of batch.entries()) {
            if (controller.signal.aborted) a.reject(controller.signal.reason);
            else a.resolve(handles[i] ?? 0);
          }
        },
        (error) => {
          for (const a of batch) a.reject(error);
        },
      );
    };
    const askDaemon = (guard: Guard) =>
      new Promise<number>((resolve, reject) => {
        if (asked.length === 0) queueMicrotask(sendAsked);
        asked.push({ guard, resolve, reject });
      });
    const plan = spec.isns === undefined ? undefined : planned.get(key) ?? expectPlanned(key);
    // A technique waiting for the planned handles stops waiting when the attempt ends.
    if (plan !== undefined) {
      controller.signal.addEventListener("abort", () => plan.fail(controller.signal.reason), {
        once: true,
      });
    }
    const firewall: AttemptFirewall = {
      // A guard the daemon put in from the attempt's plan is answered here with its handle;
      // any other goes to the daemon.
      add: plan === undefined ? askDaemon : async (guard) => {
        const handles = await plan.arrived;
        const handle = handles.get(guardKey(guard))?.shift();
        if (controller.signal.aborted) throw controller.signal.reason;
        return handle ?? await askDaemon(guard);
      },
      remove: async (handle) => {
        await ask({ type: "unguard", key, request: nextRequest++, handle });
      },
    };
    let lastError = "";
    let via: string | undefined;
    try {
      const socket = await technique.run(spec, {
        signal: controller.signal,
        log,
        noteError: (text) => {
          lastError = text;
        },
        relayedVia: (server) => {
          via = server;
        },
        firewall,
        progress: (data) => {
          if (!controller.signal.aborted) post({ type: "progress", key, data });
        },
        nextPeerData: () => {
          const queued = attempt.peerData.shift();
          if (queued !== undefined) return Promise.resolve(queued);
          return new Promise<string>((resolve, reject) => {
            if (controller.signal.aborted) return reject(controller.signal.reason);
            attempt.peerWaiters.push(resolve);
            controller.signal.addEventListener("abort", () => reject(controller.signal.reason), {
              once: true,
            });
          });
        },
      });
      if (controller.signal.aborted) {
        socket.close();
        throw controller.signal.reason;
      }
      const local = formatAddress(socket.localAddress());
      const remote = formatAddress(socket.peerAddress());
      // Applications receive an ordinary blocking socket, as socket(2) makes it.
      setNonBlocking(socket.fd, false);
      outcome = {
        message: {
          type: "connected",
          key,
          fd: -1,
          local,
          remote,
          ...(via === undefined ? {} : { via }),
        },
        socket,
      };
      log.info("connected", { local, remote });
    } catch (error) {
      let reason = controller.signal.aborted
        ? failureReason(controller.signal.reason)
        : failureReason(error);
      if (controller.signal.reason instanceof AttemptTimeoutError && lastError !== "") {
        reason = failureReason(`${reason} (last: ${lastError})`);
      }
      log.info("failed", { reason });
      outcome = { message: { type: "failed", key, reason } };
    } finally {
      clearTimeout(attempt.timer);
      running.delete(key);
      planned.delete(key);
      if (running.size === 0) collectLater();
      // Under sustained load V8 lets the heap grow with garbage it has not collected yet (a
      // worker reached 26 MB committed for 6 MB live, and the daemon's RSS kept growing).
      if (++ended % COLLECT_EVERY === 0) collectGarbage();
    }
    if (outcome.socket !== undefined && outcome.message.type === "connected") {
      outcome.message.fd = outcome.socket.detach();
    }
    post(outcome.message);
  };

  port.onmessage = (event: MessageEvent<ToWorker>) => {
    const message = event.data;
    switch (message.type) {
      case "start": {
        const { key } = message;
        if (running.has(key) || pending.has(key)) {
          post({ type: "failed", key, reason: "attempt key already running" });
          return;
        }
        clearTimeout(collect);
        const client = message.spec.client;
        const owner = owners.get(client) ?? { waiting: 0 };
        owners.set(client, owner);
        owner.waiting++;
        const cancelled = new AbortController();
        pending.set(key, cancelled);
        turns.turn(owner, cancelled.signal).then(
          () => void start(key, message),
          (reason) => post({ type: "failed", key, reason: failureReason(reason) }),
        ).finally(() => {
          pending.delete(key);
          if (!running.has(key)) planned.delete(key);
          if (--owner.waiting === 0 && owners.get(client) === owner) owners.delete(client);
        });
        return;
      }
      case "peer": {
        const attempt = running.get(message.key);
        if (attempt === undefined) return;
        const waiter = attempt.peerWaiters.shift();
        if (waiter !== undefined) waiter(message.data);
        else if (attempt.peerData.length < 16) attempt.peerData.push(message.data);
        return;
      }
      case "cancel": {
        const reason = new CancelledError(message.reason);
        running.get(message.key)?.controller.abort(reason);
        pending.get(message.key)?.abort(reason);
        return;
      }
      case "planned": {
        // Only for an attempt that is waiting for its turn or running.
        if (!running.has(message.key) && !pending.has(message.key)) return;
        const entry = planned.get(message.key) ?? expectPlanned(message.key);
        if (message.error !== undefined) return entry.fail(new Error(message.error));
        const handles = new Map<string, number[]>();
        for (const [i, guard] of message.guards.entries()) {
          const k = guardKey(guard);
          handles.set(k, [...(handles.get(k) ?? []), message.handles[i] ?? 0]);
        }
        entry.arrive(handles);
        return;
      }
      case "guarded": {
        const waiter = requests.get(message.request);
        requests.delete(message.request);
        if (message.error === undefined) waiter?.resolve(message.handles);
        else waiter?.reject(new Error(message.error));
        return;
      }
    }
  };
}
