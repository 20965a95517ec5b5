import { assertEquals, assertRejects } from "../assert.ts";
import { TurnScheduler } from "../../src/control/turns.ts";

/** A scheduler whose grants run only when the test says so. */
function stepped(): { turns: TurnScheduler; grant(): void; pending(): number } {
  const grants: (() => void)[] = [];
  const turns = new TurnScheduler({ defer: (grant) => grants.push(grant) });
  return {
    turns,
    grant: () => grants.shift()?.(),
    pending: () => grants.length,
  };
}

/**
 * Owners that each ask for `lines` turns, one after another, asking for the next as soon as a
 * turn is granted (a client whose socket always has a line ready); records who was served.
 */
function busy(turns: TurnScheduler, name: string, lines: number, served: string[]): Promise<void> {
  const owner = { name };
  return (async () => {
    for (let i = 0; i < lines; i++) {
      await turns.turn(owner);
      served.push(name);
    }
  })();
}

/** Lets the granted owners run (their continuations are microtasks). */
const settle = () => new Promise((r) => setTimeout(r, 0));

async function run(step: ReturnType<typeof stepped>, grants: number): Promise<void> {
  for (let i = 0; i < grants && step.pending() > 0; i++) {
    step.grant();
    await settle();
  }
}

Deno.test("connections that always have a request waiting take turns round-robin", async () => {
  const step = stepped();
  const served: string[] = [];
  const all = [busy(step.turns, "a", 4, served), busy(step.turns, "b", 4, served)];
  all.push(busy(step.turns, "c", 4, served));
  await run(step, 12);
  await Promise.all(all);
  assertEquals(served, ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c"]);
});

Deno.test("one turn is granted at a time, each from its own deferred grant", async () => {
  const step = stepped();
  const served: string[] = [];
  const all = [busy(step.turns, "a", 3, served), busy(step.turns, "b", 3, served)];
  assertEquals(step.pending(), 1);
  step.grant();
  await settle();
  assertEquals(served, ["a"]);
  assertEquals(step.pending(), 1, "the next grant waits for the next loop turn");
  await run(step, 5);
  await Promise.all(all);
  assertEquals(served, ["a", "b", "a", "b", "a", "b"]);
});

Deno.test("a connection asking now and then is served before busy connections", async () => {
  const step = stepped();
  const served: string[] = [];
  const flood = [busy(step.turns, "a", 30, served), busy(step.turns, "b", 30, served)];
  const bystander = { name: "x" };
  for (let round = 0; round < 5; round++) {
    // The busy ones run a while, then the bystander asks once.
    await run(step, 7);
    const before = served.length;
    const asked = step.turns.turn(bystander).then(() => served.push("x"));
    step.grant();
    await settle();
    await asked;
    assertEquals(served.slice(before), ["x"], `round ${round}: the bystander waited`);
  }
  await run(step, 1000);
  await Promise.all(flood);
});

Deno.test("a waiting connection is served within as many turns as others wait", async () => {
  const step = stepped();
  const served: string[] = [];
  const names = ["a", "b", "c", "d", "e"];
  const flood = names.map((n) => busy(step.turns, n, 8, served));
  await run(step, 23);
  // A newcomer that was served once just now waits behind the others, but no longer.
  const late = { name: "z" };
  const first = step.turns.turn(late).then(() => served.push("z"));
  await run(step, 1);
  await first;
  const before = served.length;
  const second = step.turns.turn(late).then(() => served.push("z"));
  await run(step, names.length + 1);
  await second;
  const waited = served.slice(before).indexOf("z");
  assertEquals(waited >= 0 && waited <= names.length, true, `z waited ${waited} turns`);
  await run(step, 1000);
  await Promise.all(flood);
});

Deno.test("an aborted wait rejects with the reason and leaves the others their turns", async () => {
  const step = stepped();
  const served: string[] = [];
  const controller = new AbortController();
  const gone = step.turns.turn({ name: "gone" }, controller.signal);
  const other = busy(step.turns, "b", 2, served);
  controller.abort(new Error("connection closed"));
  await assertRejects(() => gone, Error, "connection closed");
  assertEquals(step.turns.waiting, 1);
  await run(step, 5);
  await other;
  assertEquals(served, ["b", "b"]);
  await assertRejects(
    () => step.turns.turn({ name: "late" }, controller.signal),
    Error,
    "connection closed",
  );
});
