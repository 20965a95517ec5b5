import { assert, assertEquals, assertRejects, assertThrows } from "../assert.ts";
import { StartPacer } from "../../src/control/pacer.ts";

/**
 * A pacer on a clock the test moves: tokens arrive only when `advance` says
 * so (the pacer's own timer fires in real time and finds no new token until
 * then), so the tests check who is served in which order, not how fast.
 */
function clocked(rate: number, burst: number) {
  let now = 0;
  const pacer = new StartPacer({ rate, burst, now: () => now });
  return {
    pacer,
    /** Moves the clock by `ms` and lets the pacer's timer and the served owners run. */
    advance: async (ms: number) => {
      now += ms;
      await new Promise((resolve) => setTimeout(resolve, 5));
    },
  };
}

/** Lets resolved takes' continuations run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

/** An owner that takes `count` tokens one after another, recording each grant in `served`. */
function busy(pacer: StartPacer, name: string, count: number, served: string[]): Promise<void> {
  const owner = { name };
  return (async () => {
    for (let i = 0; i < count; i++) {
      await pacer.take(owner);
      served.push(name);
    }
  })();
}

Deno.test("an idle pacer admits a burst at once, then one start per token", async () => {
  const { pacer, advance } = clocked(1000, 3);
  const owner = {};
  const granted: number[] = [];
  for (let i = 0; i < 5; i++) void pacer.take(owner).then(() => granted.push(i));
  await settle();
  assertEquals(granted, [0, 1, 2], "the burst goes through without waiting");
  assertEquals(pacer.waiting, 2);
  await advance(1);
  assertEquals(granted, [0, 1, 2, 3], "one token a millisecond at 1000 a second");
  await advance(1);
  assertEquals(granted, [0, 1, 2, 3, 4]);
  assertEquals(pacer.waiting, 0);
  pacer.close();
});

Deno.test("clients that always wait share the tokens round-robin", async () => {
  const { pacer, advance } = clocked(1000, 1);
  const served: string[] = [];
  const all = ["a", "b", "c"].map((name) => busy(pacer, name, 3, served));
  await settle();
  for (let i = 0; i < 8 && served.length < 9; i++) await advance(1);
  await Promise.all(all);
  assertEquals(served, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
  pacer.close();
});

Deno.test("a client that asks less than once a round gets the next token, not the end of the round", async () => {
  const { pacer, advance } = clocked(1000, 1);
  const served: string[] = [];
  const loads = ["a", "b", "c", "d", "e", "f", "g", "h"].map((name) =>
    busy(pacer, name, 40, served)
  );
  await settle();
  for (let i = 0; i < 20; i++) await advance(1);
  const light = { name: "light" };
  for (let round = 0; round < 3; round++) {
    const before = served.length;
    const taken = pacer.take(light).then(() => served.push("light"));
    await advance(1);
    assertEquals(served.slice(before), ["light"], "the light client was served first");
    await taken;
    // The light client asks once in 16 tokens; each of the 8 others gets one in 8 or so.
    for (let i = 0; i < 15; i++) await advance(1);
  }
  let done = false;
  const finished = Promise.all(loads).then(() => done = true);
  while (!done) await advance(1000);
  await finished;
  pacer.close();
});

Deno.test("a wait that is aborted rejects with the reason and takes no token", async () => {
  const { pacer, advance } = clocked(1000, 1);
  await pacer.take({});
  const gone = new AbortController();
  const waiting = pacer.take({}, gone.signal);
  const other = pacer.take({});
  assertEquals(pacer.waiting, 2);
  gone.abort(new Error("client disconnected"));
  await assertRejects(() => waiting, Error, "client disconnected");
  assertEquals(pacer.waiting, 1);
  await advance(1);
  await other;
  await assertRejects(() => pacer.take({}, gone.signal), Error, "client disconnected");
  pacer.close();
});

Deno.test("the rate and the burst must be positive", () => {
  assertThrows(() => new StartPacer({ rate: 0, burst: 1 }), RangeError, "start rate");
  assertThrows(() => new StartPacer({ rate: 10, burst: 0.5 }), RangeError, "start burst");
  assertThrows(() => new StartPacer({ rate: Infinity, burst: 1 }), RangeError, "start rate");
  assert(new StartPacer({ rate: 1, burst: 1 }).waiting === 0);
});
