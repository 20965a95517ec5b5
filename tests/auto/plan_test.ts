import { assert, assertEquals } from "../assert.ts";
import { describePlan, planSteps, sharedSubnet } from "../../src/auto/plan.ts";
import type { Hello } from "../../src/auto/wire.ts";

function hello(role: Hello["role"], over: Partial<Hello> = {}): Hello {
  return {
    role,
    protocol: "tcp",
    techniques: ["tcp-direct", "tcp-nutss", "tcp-syni"],
    port: 1000,
    locals: [{ ip: role === "initiate" ? "10.0.1.2" : "10.0.2.2", prefixLength: 24 }],
    mapping: "pre",
    ...over,
  };
}

const names = (plan: ReturnType<typeof planSteps>) =>
  plan.steps.map((s) => `${s.technique}${s.target === "lan" ? "@lan" : ""}`);

Deno.test("two port-preserving NATs: punching in turn, no direct step", () => {
  const plan = planSteps(hello("initiate"), hello("respond"), 10000);
  assertEquals(names(plan), ["tcp-nutss", "tcp-syni"]);
  assertEquals(plan.skipped.map((s) => s.technique), ["tcp-direct"]);
  const total = plan.steps.reduce((n, s) => n + s.budgetMs, 0);
  assert(total <= 10000 - 300, `budgets fit the attempt (${total})`);
});

Deno.test("a shared subnet races a LAN connection beside the punching steps", () => {
  const plan = planSteps(
    hello("initiate", { locals: [{ ip: "192.168.7.20", prefixLength: 24 }] }),
    hello("respond", { locals: [{ ip: "192.168.7.30", prefixLength: 16 }] }),
    10000,
  );
  assertEquals(names(plan), ["tcp-direct@lan", "tcp-nutss", "tcp-syni"]);
  assertEquals(plan.steps[0]?.parallel, true);
  assertEquals(plan.steps[0]?.lan, { initiator: "192.168.7.20", responder: "192.168.7.30" });
});

Deno.test("the same address on both sides is one host, not a LAN", () => {
  assertEquals(
    sharedSubnet([{ ip: "10.0.0.1", prefixLength: 24 }], [{ ip: "10.0.0.1", prefixLength: 24 }]),
    null,
  );
  assertEquals(
    sharedSubnet([{ ip: "10.0.0.1", prefixLength: 25 }], [{ ip: "10.0.0.129", prefixLength: 24 }]),
    null,
  );
  assertEquals(
    sharedSubnet([{ ip: "fd00:1::2", prefixLength: 64 }], [{ ip: "fd00:1::3", prefixLength: 64 }]),
    { initiator: "fd00:1::2", responder: "fd00:1::3" },
  );
});

Deno.test("a public side gets a direct step first; a random side gets no TCP punching", () => {
  assertEquals(
    names(planSteps(hello("initiate"), hello("respond", { mapping: "none" }), 10000)),
    ["tcp-direct", "tcp-nutss", "tcp-syni"],
  );
  assertEquals(
    names(
      planSteps(
        hello("initiate", { mapping: "rnd" }),
        hello("respond", { mapping: "none" }),
        10000,
      ),
    ),
    ["tcp-direct"],
  );
  assertEquals(
    names(planSteps(hello("initiate", { mapping: "rnd" }), hello("respond"), 10000)),
    [],
  );
});

Deno.test("udp: birthday only when exactly one side maps randomly, nothing when both do", () => {
  const udp = { protocol: "udp" as const, techniques: ["udp" as const] };
  const one = planSteps(
    hello("initiate", { ...udp, mapping: "rnd" }),
    hello("respond", udp),
    10000,
  );
  assertEquals(one.steps.map((s) => [s.technique, s.birthday]), [["udp", true]]);
  const none = planSteps(hello("initiate", udp), hello("respond", udp), 10000);
  assertEquals(none.steps.map((s) => [s.technique, s.birthday]), [["udp", false]]);
  const both = planSteps(
    hello("initiate", { ...udp, mapping: "rnd" }),
    hello("respond", { ...udp, mapping: "rnd" }),
    10000,
  );
  assertEquals(both.steps, []);
  assert(describePlan(both).includes("no side to predict"));
});

Deno.test("the initiator's order rules; the responder's list filters it", () => {
  const plan = planSteps(
    hello("initiate", { techniques: ["tcp-syni", "tcp-nutss"] }),
    hello("respond", { techniques: ["tcp-nutss", "tcp-syni", "tcp-direct"] }),
    10000,
  );
  assertEquals(names(plan), ["tcp-syni", "tcp-nutss"]);
  const filtered = planSteps(
    hello("initiate", { techniques: ["tcp-syni", "tcp-nutss"] }),
    hello("respond", { techniques: ["tcp-nutss"] }),
    10000,
  );
  assertEquals(names(filtered), ["tcp-nutss"]);
  assertEquals(filtered.skipped, [{
    technique: "tcp-syni",
    why: "the responder does not allow it",
  }]);
});

Deno.test("two hosts behind one public address race a connection inside the site", () => {
  const plan = planSteps(
    hello("initiate", { publicIp: "192.0.2.1" }),
    hello("respond", { publicIp: "192.0.2.1" }),
    10000,
  );
  assertEquals(names(plan), ["tcp-direct@lan", "tcp-nutss", "tcp-syni"]);
  assertEquals(plan.steps[0]?.lan?.responder, "10.0.2.2");
  assert(describePlan(plan).includes("behind one public address"));
});

Deno.test("towards a public side, only the side behind NAT connects (off the punching 4-tuple)", () => {
  const plan = planSteps(hello("initiate"), hello("respond", { mapping: "none" }), 10000);
  assertEquals(plan.steps[0]?.publicSide, "respond");
  const both = planSteps(
    hello("initiate", { mapping: "none" }),
    hello("respond", { mapping: "none" }),
    10000,
  );
  assertEquals(both.steps[0]?.publicSide, undefined);
  const unknown = planSteps(hello("initiate", { mapping: "unk" }), hello("respond"), 10000);
  assertEquals(unknown.steps[0]?.publicSide, undefined);
});

Deno.test("with only the responder public, tcp-prime (the responder primes) comes before tcp-nutss", () => {
  const techniques = ["tcp-direct", "tcp-nutss", "tcp-syni", "tcp-prime"] as const;
  const plan = planSteps(
    hello("initiate", { techniques: [...techniques] }),
    hello("respond", { techniques: [...techniques], mapping: "none" }),
    10000,
  );
  assertEquals(names(plan), ["tcp-direct", "tcp-prime", "tcp-nutss", "tcp-syni"]);
  const other = planSteps(
    hello("initiate", { techniques: [...techniques], mapping: "none" }),
    hello("respond", { techniques: [...techniques] }),
    10000,
  );
  assertEquals(names(other), ["tcp-direct", "tcp-nutss", "tcp-syni", "tcp-prime"]);
});

Deno.test("relay comes last, whatever the order, when a side has a TURN server; skipped otherwise", () => {
  const techniques: Hello["techniques"] = ["relay", "tcp-direct", "tcp-nutss", "tcp-syni"];
  const withRelay = planSteps(
    hello("initiate", { techniques }),
    hello("respond", { techniques, relay: true }),
    10_000,
  );
  assertEquals(names(withRelay), ["tcp-nutss", "tcp-syni", "relay"]);
  assertEquals(withRelay.steps.at(-1)?.why, "through the responder's TURN server");
  const without = planSteps(
    hello("initiate", { techniques }),
    hello("respond", { techniques }),
    10_000,
  );
  assertEquals(names(without), ["tcp-nutss", "tcp-syni"]);
  assertEquals(
    without.skipped.find((s) => s.technique === "relay")?.why,
    "neither side has a TURN server",
  );
});

Deno.test("between two random-mapping NATs the relay gets the whole attempt", () => {
  const techniques: Hello["techniques"] = ["tcp-direct", "tcp-nutss", "relay"];
  const plan = planSteps(
    hello("initiate", { techniques, mapping: "rnd", relay: true }),
    hello("respond", { techniques, mapping: "rnd" }),
    10_000,
  );
  assertEquals(names(plan), ["relay"]);
  assertEquals(plan.steps[0]?.budgetMs, 9_700);
});
