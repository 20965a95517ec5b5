/**
 * The daemon's share of the event loop for its workers: a burst of worker
 * messages is handled a slice per turn, in order, so the clients' requests
 * (one per turn, src/control/turns.ts) are not held up behind it.
 */

import { assertEquals } from "../assert.ts";
import { TechniqueWorkers, type WorkerLike } from "../../src/daemon/workers.ts";
import type { AttemptSpec, FromWorker, ToWorker } from "../../src/techniques/protocol.ts";
import { Logger } from "../../src/log.ts";
import { TECHNIQUE_REGISTRY } from "../../src/techniques/registry.ts";

/** An in-process stand-in for a worker, driven by the test. */
class FakeWorker implements WorkerLike {
  onmessage: ((event: MessageEvent<FromWorker>) => void) | null = null;
  onerror: ((event: ErrorEvent) => void) | null = null;
  onmessageerror: ((event: MessageEvent) => void) | null = null;
  postMessage(_message: ToWorker): void {}
  terminate(): void {}
  send(message: FromWorker): void {
    this.onmessage?.(new MessageEvent("message", { data: message }));
  }
}

const spec: AttemptSpec = {
  technique: "tcp-direct",
  role: "initiate",
  id: "a",
  client: 1,
  srcIp: "127.0.0.1",
  srcPorts: [1000],
  dstIp: "127.0.0.1",
  dstPorts: [1001],
  timeoutMs: 5000,
};

/** One turn of the event loop (immediates run in the order they were set). */
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

function burst(): { fake: FakeWorker; workers: TechniqueWorkers; progress: string[]; key: number } {
  const fake = new FakeWorker();
  const workers = new TechniqueWorkers({
    registry: TECHNIQUE_REGISTRY,
    log: new Logger("error", () => {}),
    spawn: () => fake,
  });
  const progress: string[] = [];
  const key = workers.start(spec, {
    progress: (data) => progress.push(data),
    connected: () => {},
    failed: (reason) => progress.push(`failed: ${reason}`),
  });
  // Deno hands the daemon every message a worker queued in one turn of its loop.
  for (let i = 0; i < 40; i++) fake.send({ type: "progress", key, data: `p${i}` });
  return { fake, workers, progress, key };
}

Deno.test("a burst of worker messages is handled 8 per turn of the event loop, in order", async () => {
  const { workers, progress } = burst();
  try {
    const handled = [progress.length];
    for (let turn = 0; turn < 5; turn++) {
      await nextTurn();
      handled.push(progress.length);
    }
    assertEquals(handled, [8, 16, 24, 32, 40, 40]);
    assertEquals(progress, Array.from({ length: 40 }, (_, i) => `p${i}`));
  } finally {
    workers.shutdown();
  }
});

Deno.test("messages a worker sent before it was retired are dropped with it", async () => {
  const { workers, progress } = burst();
  workers.shutdown();
  for (let turn = 0; turn < 3; turn++) await nextTurn();
  assertEquals(progress.length, 9, progress.join(" "));
  assertEquals(progress.at(-1), "failed: cancelled: daemon shutting down");
});
