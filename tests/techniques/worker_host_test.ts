import { assertEquals } from "../assert.ts";
import type { Socket } from "../../ffi/socket.ts";
import type { AttemptSpec, FromWorker, ToWorker } from "../../src/techniques/protocol.ts";
import type { AttemptContext, Technique } from "../../src/techniques/technique.ts";
import { hostTechnique, type WorkerPort } from "../../src/techniques/worker_host.ts";
import { flowGuards } from "../../src/techniques/tcp_flow_guard.ts";
import { inetAddress } from "../../ffi/structs.ts";
import type { Guard } from "../../src/firewall/guards.ts";

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

/** A technique that asks for the guards of its planned flow, then one more, and reports the handles. */
class Guarding implements Technique {
  readonly name = "tcp-nutss";
  readonly needsFirewall = true;
  handles: number[] | Error | undefined;
  validate(): void {}
  async run(spec: AttemptSpec, context: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peer = inetAddress(spec.dstIp, spec.dstPorts[0] ?? 0);
    const isn = spec.isns?.[0] ?? 1;
    try {
      const planned = await Promise.all(
        flowGuards(local, peer, isn, ["time-exceeded"]).map((g) => context.firewall.add(g)),
      );
      // A new ISN after a reset: not planned.
      const more = await context.firewall.add(flowGuards(local, peer, isn + 7)[1] as Guard);
      this.handles = [...planned, more];
    } catch (error) {
      this.handles = error as Error;
    }
    throw new Error("done");
  }
}

Deno.test("guards the daemon put in from the attempt's plan are answered in the worker, others go to the daemon", async () => {
  const technique = new Guarding();
  const posted: FromWorker[] = [];
  const port: WorkerPort = { postMessage: (m) => posted.push(m), onmessage: null };
  hostTechnique(technique, port);
  const send = (message: ToWorker) =>
    port.onmessage?.(new MessageEvent<ToWorker>("message", { data: message }));
  const attempt = { ...spec(1, "planned"), technique: "tcp-nutss" as const, isns: [1000] };
  send({ type: "start", key: 7, spec: attempt, logLevel: "error" });
  await turns(3);
  assertEquals(
    posted.filter((m) => m.type === "guard"),
    [],
    "asked before the plan's handles came",
  );
  const guards = flowGuards(
    inetAddress("127.0.0.1", 40000),
    inetAddress("127.0.0.1", 40001),
    1000,
    ["time-exceeded"],
  );
  send({ type: "planned", key: 7, guards, handles: [11, 12, 13] });
  await turns(3);
  const asked = posted.filter((m) => m.type === "guard");
  assertEquals(asked.length, 1, "only the unplanned guard goes to the daemon");
  assertEquals(asked[0]?.type === "guard" && asked[0].guards.map((g) => g.kind), ["syn-ack"]);
  const request = asked[0]?.type === "guard" ? asked[0].request : 0;
  send({ type: "guarded", request, handles: [14] });
  await turns(5);
  assertEquals(technique.handles, [11, 12, 13, 14]);
});

Deno.test("when the planned guards could not go in, the technique gets the daemon's reason", async () => {
  const technique = new Guarding();
  const port: WorkerPort = { postMessage: () => {}, onmessage: null };
  hostTechnique(technique, port);
  const send = (message: ToWorker) =>
    port.onmessage?.(new MessageEvent<ToWorker>("message", { data: message }));
  const attempt = { ...spec(1, "refused"), technique: "tcp-nutss" as const, isns: [1000] };
  send({ type: "start", key: 8, spec: attempt, logLevel: "error" });
  send({
    type: "planned",
    key: 8,
    guards: [],
    handles: [],
    error: "Cannot add a firewall guard: this user holds 4096 already",
  });
  await turns(5);
  assertEquals(
    (technique.handles as Error).message,
    "Cannot add a firewall guard: this user holds 4096 already",
  );
});
