import { assertEquals } from "../assert.ts";
import type { Socket } from "../../ffi/socket.ts";
import type { AttemptSpec, FromWorker, ToWorker } from "../../src/techniques/protocol.ts";
import type { AttemptContext, Technique } from "../../src/techniques/technique.ts";
import { hostTechnique, type WorkerPort } from "../../src/techniques/worker_host.ts";

/** A technique that records the order of its starts and then waits until its attempt ends. */
class Recording implements Technique {
  readonly name = "tcp-direct";
  readonly needsFirewall = false;
  readonly started: string[] = [];
  validate(): void {}
  run(spec: AttemptSpec, context: AttemptContext): Promise<Socket> {
    this.started.push(spec.id);
    return new Promise((_, reject) => {
      context.signal.addEventListener("abort", () => reject(context.signal.reason), {
        once: true,
      });
    });
  }
}

function spec(client: number, id: string): AttemptSpec {
  return {
    technique: "tcp-direct",
    role: "initiate",
    id,
    client,
    srcIp: "127.0.0.1",
    srcPorts: [40000],
    dstIp: "127.0.0.1",
    dstPorts: [40001],
    timeoutMs: 10_000,
  };
}

/** Hosts a Recording technique on a fake port; returns it, the port and what the worker posted. */
function host() {
  const technique = new Recording();
  const posted: FromWorker[] = [];
  const port: WorkerPort = { postMessage: (m) => posted.push(m), onmessage: null };
  hostTechnique(technique, port);
  const send = (message: ToWorker) =>
    port.onmessage?.(new MessageEvent<ToWorker>("message", { data: message }));
  return { technique, posted, send };
}

const turns = (n: number) =>
  new Promise<void>((resolve) => {
    const step = (left: number) => left === 0 ? resolve() : setImmediate(() => step(left - 1));
    step(n);
  });

Deno.test("a client's start waits behind one start of a busy client, not behind all of its queued starts", async () => {
  const { technique, send } = host();
  for (let i = 0; i < 100; i++) {
    send({ type: "start", key: i, spec: spec(1, `busy${i}`), logLevel: "error" });
  }
  send({ type: "start", key: 100, spec: spec(2, "bystander"), logLevel: "error" });
  await turns(110);
  assertEquals(technique.started.length, 101);
  assertEquals(technique.started.indexOf("bystander"), 1);
  // The busy client's starts keep their order.
  assertEquals(technique.started.filter((id) => id.startsWith("busy")).slice(0, 3), [
    "busy0",
    "busy1",
    "busy2",
  ]);
  for (let i = 0; i <= 100; i++) send({ type: "cancel", key: i, reason: "test over" });
  await turns(5);
});

Deno.test("a start cancelled while it waits for its turn fails with the cancel's reason and never runs", async () => {
  const { technique, posted, send } = host();
  send({ type: "start", key: 1, spec: spec(1, "first"), logLevel: "error" });
  send({ type: "start", key: 2, spec: spec(1, "second"), logLevel: "error" });
  send({ type: "cancel", key: 2, reason: "client went away" });
  await turns(5);
  assertEquals(technique.started, ["first"]);
  assertEquals(posted.filter((m) => m.type === "failed"), [
    { type: "failed", key: 2, reason: "Cannot finish attempt: cancelled (client went away)" },
  ]);
  // The same key may start again once its cancelled start is gone.
  send({ type: "start", key: 2, spec: spec(1, "again"), logLevel: "error" });
  await turns(5);
  assertEquals(technique.started, ["first", "again"]);
  send({ type: "cancel", key: 1, reason: "test over" });
  send({ type: "cancel", key: 2, reason: "test over" });
  await turns(5);
  assertEquals(posted.filter((m) => m.type === "failed").length, 3);
});
