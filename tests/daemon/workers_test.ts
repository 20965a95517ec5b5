import { assert, assertEquals } from "../assert.ts";
import { isOpen } from "../../ffi/syscalls.ts";
import { Socket } from "../../ffi/socket.ts";
import { fdIdentity } from "../../ffi/fd_ledger.ts";
import { type AttemptEvents, TechniqueWorkers, type WorkerLike } from "../../src/daemon/workers.ts";
import type { FromWorker, ToWorker } from "../../src/techniques/protocol.ts";
import { Logger } from "../../src/log.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";
import { TcpDirect } from "../../src/techniques/tcp_direct.ts";
import { TECHNIQUE_REGISTRY } from "../../src/techniques/registry.ts";
import { freePort } from "../helpers/daemon.ts";
import { FirewallService } from "../../src/firewall/service.ts";
import { guardElements } from "../../src/firewall/guards.ts";
import { flowGuards } from "../../src/techniques/tcp_flow_guard.ts";
import { inetAddress } from "../../ffi/structs.ts";

const registry = {
  ...TECHNIQUE_REGISTRY,
  "tcp-direct": {
    technique: new TcpDirect(),
    workerUrl: new URL("../fixtures/crashing_worker.ts", import.meta.url),
  },
};

interface Outcome {
  progress: string[];
  result: Promise<{ fd: number } | { reason: string }>;
  events: AttemptEvents;
}

function outcome(): Outcome {
  const progress: string[] = [];
  let settle!: (v: { fd: number } | { reason: string }) => void;
  const result = new Promise<{ fd: number } | { reason: string }>((r) => settle = r);
  return {
    progress,
    result,
    events: {
      progress: (data) => progress.push(data),
      connected: (fd) => settle({ fd }),
      failed: (reason) => settle({ reason }),
    },
  };
}

function spec(
  id: string,
  src: number,
  dst: number,
  role: "initiate" | "respond",
  extra = "",
): AttemptSpec {
  const s: AttemptSpec = {
    technique: "tcp-direct",
    role,
    id,
    client: 1,
    srcIp: "127.0.0.1",
    srcPorts: [src],
    dstIp: "127.0.0.1",
    dstPorts: [dst],
    timeoutMs: 5000,
  };
  if (role === "respond") s.extra = extra;
  return s;
}

Deno.test("a crashed technique worker fails its attempts, releases its fds, and the next attempt gets a new worker", async () => {
  const records: string[] = [];
  const workers = new TechniqueWorkers({
    registry,
    log: new Logger(
      "debug",
      (r) => records.push(`${r.level} ${r.message} ${JSON.stringify(r.fields)}`),
    ),
  });
  try {
    const crash = outcome();
    workers.start(spec("crash", freePort(), freePort(), "initiate"), crash.events);
    const result = await crash.result;
    assertEquals(result, { reason: "tcp-direct worker crashed" });
    const held = Number(crash.progress[0]?.replace("holding-fd-", ""));
    assert(Number.isInteger(held), `no fd reported: ${crash.progress}`);
    assertEquals(isOpen(held), false, "the crashed worker's socket is still open");
    assertEquals(workers.workers, 0);
    assertEquals(workers.running, 0);
    assert(records.some((r) => r.startsWith("error technique worker crashed")), records.join("\n"));

    // The technique still works: a fresh worker runs a real tcp-direct pair.
    const [p1, p2] = [freePort(), freePort()];
    const a = outcome();
    const b = outcome();
    workers.start(spec("a", p1, p2, "initiate"), a.events);
    // The responder needs the initiator's progress (direct2:TOKEN) as EXTRA.
    for (let i = 0; i < 500 && a.progress.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    workers.start(spec("b", p2, p1, "respond", a.progress[0]), b.events);
    const [ra, rb] = await Promise.all([a.result, b.result]);
    assert("fd" in ra && "fd" in rb, JSON.stringify([ra, rb]));
    new Socket(ra.fd).close();
    new Socket(rb.fd).close();
    assertEquals(workers.workers, 1);
  } finally {
    workers.shutdown();
  }
});

/** An in-process stand-in for a worker, driven by the test. */
class FakeWorker implements WorkerLike {
  onmessage: ((event: MessageEvent<FromWorker>) => void) | null = null;
  onerror: ((event: ErrorEvent) => void) | null = null;
  onmessageerror: ((event: MessageEvent) => void) | null = null;
  received: ToWorker[] = [];
  terminated = false;
  postMessage(message: ToWorker): void {
    this.received.push(message);
  }
  terminate(): void {
    this.terminated = true;
  }
  send(message: FromWorker): void {
    this.onmessage?.(new MessageEvent("message", { data: message }));
  }
}

Deno.test("cancel reports once the worker has let go, and a success it reports meanwhile is closed", () => {
  const fake = new FakeWorker();
  const workers = new TechniqueWorkers({
    registry,
    log: new Logger("error", () => {}),
    spawn: () => fake,
  });
  try {
    const a = outcome();
    const events: string[] = [];
    a.events.failed = (reason) => events.push(reason);
    a.events.progress = (data) => events.push(`progress ${data}`);
    const key = workers.start(spec("a", 1000, 1001, "initiate"), a.events);
    workers.cancel(key, "test");
    assertEquals(fake.received.map((m) => m.type), ["start", "cancel"]);
    assertEquals(events, [], "reported before the worker let go");
    // Progress after the cancel is not forwarded; the worker then finishes with a socket nobody wants.
    fake.send({ type: "progress", key, data: "late" });
    const late = Socket.create("inet", "stream");
    const fd = late.detach();
    fake.send({ type: "connected", key, fd, local: "x", remote: "y" });
    assertEquals(isOpen(fd), false);
    assertEquals(events, ["cancelled: test"]);
    assertEquals(workers.running, 0);
  } finally {
    workers.shutdown();
  }
  assertEquals(fake.terminated, true);
});

Deno.test("a cancel the worker never confirms is reported after the grace period", async () => {
  const fake = new FakeWorker();
  const workers = new TechniqueWorkers({
    registry,
    log: new Logger("error", () => {}),
    spawn: () => fake,
    graceMs: 50,
  });
  try {
    const a = outcome();
    const key = workers.start(spec("a", 1000, 1001, "initiate"), a.events);
    workers.cancel(key, "slow worker");
    assertEquals(await a.result, { reason: "cancelled: slow worker" });
    assertEquals(workers.running, 0);
  } finally {
    workers.shutdown();
  }
});

Deno.test("retiring a worker closes every fd its ledger holds and wakes its reactor", () => {
  const fake = new FakeWorker();
  const workers = new TechniqueWorkers({
    registry,
    log: new Logger("error", () => {}),
    spawn: () => fake,
  });
  const a = outcome();
  workers.start(spec("a", 1000, 1001, "initiate"), a.events);
  const held = [
    Socket.create("inet", "stream").detach(),
    Socket.create("inet", "datagram").detach(),
  ];
  for (const fd of held) fake.send({ type: "fd", fd, kind: "socket" });
  const released = Socket.create("inet", "stream");
  fake.send({ type: "fd", fd: released.fd, kind: "socket" });
  fake.send({ type: "fd", fd: released.fd, kind: null });
  workers.shutdown();
  for (const fd of held) assertEquals(isOpen(fd), false);
  // An fd the worker had already released is not the supervisor's to close.
  assertEquals(isOpen(released.fd), true);
  released.close();
});

// Found by the guarded-shutdown test: a worker closed a socket and was terminated before its
// "released" note arrived; the number went to an nft pipe of the firewall queue, retiring the
// worker closed that pipe, and the daemon's shutdown waited for nft forever.
Deno.test("retiring a worker leaves alone an fd number that now belongs to another file", () => {
  const fake = new FakeWorker();
  const workers = new TechniqueWorkers({
    registry,
    log: new Logger("error", () => {}),
    spawn: () => fake,
  });
  workers.start(spec("a", 1000, 1001, "initiate"), outcome().events);
  // The worker's socket, closed by the worker without a word to the daemon ...
  const socket = Socket.create("inet", "stream");
  const number = socket.fd;
  const identity = fdIdentity(number) ?? "";
  fake.send({ type: "fd", fd: number, kind: "socket", identity });
  socket.close();
  // ... and its number taken by someone else's socket at once.
  const other = Socket.create("inet", "datagram");
  try {
    assertEquals(other.fd, number);
    const kept = Socket.create("inet", "stream").detach();
    fake.send({ type: "fd", fd: kept, kind: "socket", identity: fdIdentity(kept) ?? "" });
    workers.shutdown();
    assertEquals(isOpen(number), true, "the other owner's fd stays open");
    assertEquals(isOpen(kept), false, "the worker's own fd is closed");
  } finally {
    other.close();
  }
});

Deno.test("a worker with no attempt for idleMs is stopped, and the next attempt starts a new one", async () => {
  const spawned: FakeWorker[] = [];
  const workers = new TechniqueWorkers({
    registry,
    log: new Logger("error", () => {}),
    spawn: () => {
      spawned.push(new FakeWorker());
      return spawned.at(-1) as FakeWorker;
    },
    idleMs: 30,
  });
  try {
    const a = outcome();
    const key = workers.start(spec("a", 1000, 1001, "initiate"), a.events);
    spawned[0]?.send({ type: "failed", key, reason: "no" });
    assertEquals(await a.result, { reason: "no" });
    assertEquals(workers.workers, 1);
    await new Promise((r) => setTimeout(r, 150));
    assertEquals(workers.workers, 0);
    assertEquals(spawned[0]?.terminated, true);
    // A worker in use is not stopped, however long its attempt runs.
    const b = outcome();
    workers.start(spec("b", 1000, 1001, "initiate"), b.events);
    await new Promise((r) => setTimeout(r, 100));
    assertEquals([spawned.length, spawned[1]?.terminated], [2, false]);
  } finally {
    workers.shutdown();
  }
});

Deno.test("a planned technique's guards go in with its start, and the worker gets their handles without asking", async () => {
  const fake = new FakeWorker();
  const scripts: string[] = [];
  const firewall = new FirewallService({
    log: new Logger("error", () => {}),
    maxElements: 100,
    maxElementsPerUid: 100,
    nft: (_args, input) => {
      scripts.push(input ?? "");
      return Promise.resolve({ code: 0, stdout: "", stderr: "" });
    },
  });
  const workers = new TechniqueWorkers({
    registry: { ...registry, "tcp-nutss": { ...TECHNIQUE_REGISTRY["tcp-nutss"] } },
    log: new Logger("error", () => {}),
    spawn: () => fake,
    firewall,
  });
  try {
    const a = outcome();
    const attempt: AttemptSpec = {
      ...spec("a", 20000, 30000, "initiate"),
      technique: "tcp-nutss",
      dstPorts: [30000, 30001],
    };
    const key = workers.start(attempt, a.events);
    const [start] = fake.received;
    assert(start?.type === "start");
    const isns = start.spec.isns ?? [];
    assertEquals(isns.length, 2, "one ISN per flow");
    await firewall.flushed();
    await new Promise((resolve) => setTimeout(resolve, 0));
    assertEquals(firewall.batches, 1, "the planned guards went in with the start, in one batch");
    // What FlowGuard.install asks for, in its order: rst-out, syn-ack and time-exceeded per flow.
    const local = inetAddress("127.0.0.1", 20000);
    const guards = [30000, 30001].flatMap((port, i) =>
      flowGuards(local, inetAddress("127.0.0.1", port), isns[i] ?? 0, ["time-exceeded"])
    );
    assertEquals(firewall.elements, guards.flatMap(guardElements).length);
    const planned = fake.received.find((m) => m.type === "planned");
    assert(planned?.type === "planned" && planned.error === undefined, JSON.stringify(planned));
    assertEquals(planned.key, key);
    assertEquals(planned.guards, guards);
    assertEquals(new Set(planned.handles).size, guards.length, "a handle for each guard");
    fake.send({ type: "failed", key, reason: "test" });
    assertEquals(await a.result, { reason: "test" });
    await firewall.flushed();
    assertEquals(firewall.elements, 0, "every guard went with the attempt");
  } finally {
    workers.shutdown();
  }
});
