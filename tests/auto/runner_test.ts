/**
 * The auto runner between two punchds, with fake techniques: the steps, the
 * race, the winner, and what is released before the report.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import {
  AutoAttempt,
  type AutoEvents,
  type StepEvents,
  type StepHost,
} from "../../src/auto/runner.ts";
import type { Hello } from "../../src/auto/wire.ts";
import type { TechniqueName } from "../../src/control/codec.ts";
import { Logger } from "../../src/log.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";

/** What a fake technique does once both sides run it. */
type Behaviour = "connect" | "fail" | "hang";

interface FakeStep {
  spec: AttemptSpec;
  events: StepEvents;
  cancelled: boolean;
  done: boolean;
  /** The host reported the step's end (after a cancel, some time later). */
  released: boolean;
}

/** Both sides' step hosts: a step connects (or fails) when both sides run it. */
class FakeTechniques {
  readonly steps = new Map<string, FakeStep>();
  readonly closed: number[] = [];
  #nextFd = 100;
  #nextKey = 1;
  constructor(
    readonly behaviour: (spec: AttemptSpec) => Behaviour,
    readonly delayMs: (spec: AttemptSpec) => number = () => 5,
  ) {}

  host(side: "a" | "b"): StepHost {
    const keys = new Map<number, string>();
    return {
      start: (spec, events) => {
        const key = this.#nextKey++;
        const name = `${side}:${spec.technique}:${spec.dstIp}`;
        keys.set(key, name);
        const step: FakeStep = {
          spec,
          events: {
            progress: (d) => events.progress(d),
            connected: (fd, l, r) => {
              step.released = true;
              events.connected(fd, l, r);
            },
            failed: (reason) => {
              step.released = true;
              events.failed(reason);
            },
          },
          cancelled: false,
          done: false,
          released: false,
        };
        this.steps.set(name, step);
        if (spec.role === "initiate") queueMicrotask(() => events.progress(`hi-${spec.technique}`));
        const other = this.steps.get(
          `${side === "a" ? "b" : "a"}:${spec.technique}:${side === "a" ? "10.0.0.2" : "10.0.0.1"}`,
        ) ?? [...this.steps.entries()].find(([n, s]) =>
          !n.startsWith(side) && s.spec.technique === spec.technique && !s.done
        )?.[1];
        if (other !== undefined && !other.done) {
          setTimeout(() => {
            for (const s of [step, other]) {
              if (s.done) continue;
              const outcome = this.behaviour(s.spec);
              if (outcome === "connect") {
                s.done = true;
                s.events.connected(this.#nextFd++, "l", "r");
              } else if (outcome === "fail") {
                s.done = true;
                s.events.failed(`${s.spec.technique} refused`);
              }
            }
          }, this.delayMs(spec));
        }
        return key;
      },
      peer: () => true,
      cancel: (key, reason) => {
        const step = this.steps.get(keys.get(key) ?? "");
        if (step === undefined || step.done) return;
        step.cancelled = true;
        step.done = true;
        // Released later, like a worker that first closes its sockets.
        setTimeout(() => step.events.failed(`cancelled: ${reason}`), 10);
      },
    };
  }
}

function hello(role: Hello["role"], over: Partial<Hello> = {}): Hello {
  return {
    role,
    protocol: "tcp",
    techniques: ["tcp-direct", "tcp-nutss", "tcp-syni"],
    port: role === "initiate" ? 20000 : 30000,
    locals: [{ ip: role === "initiate" ? "10.0.1.2" : "10.0.2.2", prefixLength: 24 }],
    mapping: "pre",
    ...over,
  };
}

interface Result {
  ok?: { fd: number; technique: TechniqueName };
  error?: string;
  progress: string[];
}

/** Runs one auto attempt between two runners, relaying progress; resolves with both results. */
async function run(
  fake: FakeTechniques,
  helloA: Hello,
  helloB: Hello,
  { timeoutMs = 2000, cancelAfterMs }: { timeoutMs?: number; cancelAfterMs?: number } = {},
): Promise<[Result, Result]> {
  const log = new Logger("error");
  const results: [Result, Result] = [{ progress: [] }, { progress: [] }];
  let b: AutoAttempt | null = null;
  const pendingToB: string[] = [];
  let settled = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => done = r);
  const events = (i: 0 | 1, deliver: (d: string) => void): AutoEvents => ({
    progress: (data) => {
      results[i].progress.push(data);
      deliver(data);
    },
    connected: (fd, _l, _r, technique) => {
      results[i].ok = { fd, technique };
      if (++settled === 2) done();
    },
    failed: (reason) => {
      results[i].error = reason;
      if (++settled === 2) done();
    },
  });
  const base = (role: "initiate" | "respond", dst: string): AutoOptionsBase => ({
    role,
    id: role,
    client: 1,
    srcIp: role === "initiate" ? "10.0.1.2" : "10.0.2.2",
    srcPorts: [role === "initiate" ? 20000 : 30000],
    dstIp: dst,
    dstPorts: [role === "initiate" ? 30000 : 20000],
    timeoutMs,
  });
  const a: AutoAttempt = new AutoAttempt({
    base: base("initiate", "172.16.2.2"),
    protocol: "tcp",
    self: helloA,
    host: fake.host("a"),
    log,
    closeFd: (fd) => fake.closed.push(fd),
    events: events(0, (data) => {
      if (b === null) {
        pendingToB.push(data);
        return;
      }
      setTimeout(() => b?.peer(data), 1);
    }),
  });
  a.start();
  const extra = pendingToB.shift() ?? "";
  assertMatch(extra, /^auto1i;/);
  b = new AutoAttempt({
    base: base("respond", "172.16.1.2"),
    protocol: "tcp",
    self: helloB,
    peerHello: { ...helloA },
    host: fake.host("b"),
    log,
    closeFd: (fd) => fake.closed.push(fd),
    events: events(1, (data) => setTimeout(() => a.peer(data), 1)),
  });
  b.start();
  for (const data of pendingToB) setTimeout(() => b?.peer(data), 1);
  let timer: ReturnType<typeof setTimeout> | undefined;
  if (cancelAfterMs !== undefined) {
    timer = setTimeout(() => {
      a.cancel("by client");
      b?.cancel("by client");
    }, cancelAfterMs);
  }
  await finished;
  clearTimeout(timer);
  // Let the last relayed messages land (they must be ignored).
  await new Promise((r) => setTimeout(r, 30));
  return results;
}

type AutoOptionsBase = ConstructorParameters<typeof AutoAttempt>[0]["base"];

Deno.test("auto moves to the next step when one fails, and both sides take the same technique", async () => {
  const fake = new FakeTechniques((spec) => spec.technique === "tcp-nutss" ? "fail" : "connect");
  const [a, b] = await run(fake, hello("initiate"), hello("respond"));
  assertEquals(a.ok?.technique, "tcp-syni");
  assertEquals(b.ok?.technique, "tcp-syni");
  assert(a.progress.includes("f0"), "the initiator tells the responder that step 0 ended");
  assert(a.progress.includes("w1"), "the initiator names the winning step");
});

Deno.test("a raced LAN step and a step in turn that both connect end with one connection on both sides", async () => {
  const fake = new FakeTechniques(() => "connect");
  const lanA = hello("initiate", { locals: [{ ip: "192.168.1.2", prefixLength: 24 }] });
  const lanB = hello("respond", { locals: [{ ip: "192.168.1.3", prefixLength: 24 }] });
  const [a, b] = await run(fake, lanA, lanB);
  assert(a.ok !== undefined && b.ok !== undefined);
  assertEquals(a.ok.technique, b.ok.technique);
  // Every connection that did not win was closed: 2 fds per connected step, 2 kept.
  const opened = [...fake.steps.values()].filter((s) => !s.cancelled).length;
  assertEquals(fake.closed.length, opened - 2);
  assert(!fake.closed.includes(a.ok.fd) && !fake.closed.includes(b.ok.fd));
});

Deno.test("when every step fails, one error line lists each with its reason", async () => {
  const fake = new FakeTechniques(() => "fail");
  const [a, b] = await run(fake, hello("initiate", { mapping: "none" }), hello("respond"));
  assertEquals(a.ok, undefined);
  assertMatch(
    a.error ?? "",
    /^auto: every step failed; tried tcp-direct \(tcp-direct refused\), tcp-nutss \(tcp-nutss refused\), tcp-syni \(tcp-syni refused\)$/,
  );
  assertMatch(b.error ?? "", /^auto: /);
  assert((a.error ?? "").length <= 400);
});

Deno.test("a random mapping leaves TCP punching out and fails at once with the reason", async () => {
  const fake = new FakeTechniques(() => "connect");
  const [a] = await run(fake, hello("initiate", { mapping: "rnd" }), hello("respond"));
  assertMatch(
    a.error ?? "",
    /^auto: nothing to try; skipped tcp-direct \(no shared subnet and both sides behind NAT\); tcp-nutss, tcp-syni \(the initiator's NAT maps each flow to a random port\)/,
  );
  assertEquals(fake.steps.size, 0);
});

Deno.test("cancel ends every running step and reports only after they released", async () => {
  const fake = new FakeTechniques(() => "hang");
  const [a, b] = await run(fake, hello("initiate"), hello("respond"), { cancelAfterMs: 50 });
  assertEquals(a.error?.startsWith("auto: cancelled: by client"), true);
  assertEquals(b.error?.startsWith("auto: cancelled: by client"), true);
  for (const step of fake.steps.values()) assert(step.done, `${step.spec.technique} was released`);
});

Deno.test("the attempt's time limit ends a plan whose steps hang", async () => {
  const fake = new FakeTechniques(() => "hang");
  const [a] = await run(fake, hello("initiate"), hello("respond"), { timeoutMs: 300 });
  assertMatch(a.error ?? "", /^auto: timed out after 300 ms/);
  for (const step of fake.steps.values()) assert(step.done);
});

Deno.test("a responder whose taken step never connects still reports when the time is up", async () => {
  // The initiator connects; the responder's side of that step hangs (a connection it refused).
  const fake = new FakeTechniques((spec) => spec.role === "initiate" ? "connect" : "hang");
  const [a, b] = await run(fake, hello("initiate", { mapping: "none" }), hello("respond"), {
    timeoutMs: 400,
  });
  assertEquals(a.ok?.technique, "tcp-direct");
  assertMatch(b.error ?? "", /^auto: timed out after 400 ms/);
});

Deno.test("the responder starts a step in turn only after the earlier one has released the 4-tuple", async () => {
  // Step 0 fails at once on the initiator and hangs on the responder until cancelled.
  const fake = new FakeTechniques((spec) =>
    spec.technique === "tcp-nutss" ? (spec.role === "initiate" ? "fail" : "hang") : "connect"
  );
  const overlaps: string[] = [];
  const original = fake.host.bind(fake);
  fake.host = (side) => {
    const host = original(side);
    if (side === "a") return host;
    return {
      ...host,
      start: (spec, events) => {
        const busy = [...fake.steps.entries()].filter(([n, s]) =>
          n.startsWith("b:") && !s.released
        );
        if (busy.length > 0) overlaps.push(`${spec.technique} while ${busy.map(([n]) => n)}`);
        return host.start(spec, events);
      },
    };
  };
  const [a, b] = await run(fake, hello("initiate"), hello("respond"));
  assertEquals(a.ok?.technique, "tcp-syni");
  assertEquals(b.ok?.technique, "tcp-syni");
  assertEquals(overlaps, []);
});

Deno.test("a LAN connection a little slower than a punched one is still the one both sides take", async () => {
  const fake = new FakeTechniques(
    () => "connect",
    (spec) => spec.dstIp.startsWith("192.168.") ? 80 : 5,
  );
  const lanA = hello("initiate", { locals: [{ ip: "192.168.1.2", prefixLength: 24 }] });
  const lanB = hello("respond", { locals: [{ ip: "192.168.1.3", prefixLength: 24 }] });
  const [a, b] = await run(fake, lanA, lanB);
  assert(a.progress.includes("w0"), `the initiator took the LAN step: ${a.progress}`);
  assertEquals(a.ok?.technique, "tcp-direct");
  assertEquals(b.ok?.technique, "tcp-direct");
});
