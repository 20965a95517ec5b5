import { assertEquals, assertRejects } from "../assert.ts";
import { ExpiringCache } from "../../src/discovery/hop_cache.ts";
import {
  DEFAULT_HOP_LIMIT,
  type HopDiscovery,
  HopFinder,
  type HopRoute,
} from "../../src/discovery/hop_limit.ts";

const route: HopRoute = { source: "10.0.1.2", destination: "172.16.2.2" };
const never = new AbortController().signal;

function found(firstOutside: number | null, reason = "test"): HopDiscovery {
  return { firstOutside, reason, hops: [], probes: 1 };
}

/** A probe that counts its calls and answers `answer`. */
function countingProbe(answer: HopDiscovery) {
  const calls: HopRoute[] = [];
  return {
    calls,
    probe: (r: HopRoute) => {
      calls.push(r);
      return Promise.resolve(answer);
    },
  };
}

Deno.test("a fixed hop limit wins and nothing is probed", async () => {
  const { calls, probe } = countingProbe(found(3));
  const finder = new HopFinder({ probe });
  assertEquals(await finder.hopLimit(5, route, never), {
    hopLimit: 5,
    how: "fixed",
    reason: "configured",
  });
  assertEquals(calls.length, 0);
});

Deno.test("the first outside hop is the hop limit, discovered once and then cached", async () => {
  const { calls, probe } = countingProbe(found(3, "hop 3 is the first outside"));
  const finder = new HopFinder({ probe });
  assertEquals(await finder.hopLimit(undefined, route, never), {
    hopLimit: 3,
    how: "discovered",
    reason: "hop 3 is the first outside",
  });
  assertEquals((await finder.hopLimit(undefined, route, never)).how, "cached");
  assertEquals(calls.length, 1);
  await finder.hopLimit(undefined, { ...route, destination: "172.16.9.9" }, never);
  assertEquals(calls.length, 2);
});

Deno.test("a discovered hop limit is at least 2", async () => {
  const finder = new HopFinder({ probe: countingProbe(found(1, "hop 1 is public")).probe });
  assertEquals(await finder.hopLimit(undefined, route, never), {
    hopLimit: 2,
    how: "discovered",
    reason: "hop 1 is public (at least 2)",
  });
});

Deno.test("an unknown answer gives the default hop limit with the reason", async () => {
  const finder = new HopFinder({ probe: countingProbe(found(null, "ambiguous")).probe });
  assertEquals(await finder.hopLimit(undefined, route, never), {
    hopLimit: DEFAULT_HOP_LIMIT,
    how: "default",
    reason: "ambiguous",
  });
});

Deno.test("known answers live knownMs and unknown ones unknownMs on the injected clock", async () => {
  let t = 0;
  const cache = new ExpiringCache<HopDiscovery>({ now: () => t });
  let answer = found(null);
  let calls = 0;
  const finder = new HopFinder({
    cache,
    knownMs: 1000,
    unknownMs: 100,
    probe: () => (calls++, Promise.resolve(answer)),
  });
  await finder.hopLimit(undefined, route, never);
  t = 99;
  await finder.hopLimit(undefined, route, never);
  assertEquals(calls, 1);
  t = 100;
  answer = found(3);
  assertEquals((await finder.hopLimit(undefined, route, never)).how, "discovered");
  assertEquals(calls, 2);
  t = 1099;
  assertEquals((await finder.hopLimit(undefined, route, never)).how, "cached");
  t = 1100;
  assertEquals((await finder.hopLimit(undefined, route, never)).how, "discovered");
  assertEquals(calls, 3);
});

Deno.test("concurrent callers for one route share one probe", async () => {
  let release = (_: HopDiscovery) => {};
  let calls = 0;
  const finder = new HopFinder({
    probe: () => (calls++, new Promise<HopDiscovery>((resolve) => release = resolve)),
  });
  const first = finder.hopLimit(undefined, route, never);
  const second = finder.hopLimit(undefined, route, never);
  release(found(4));
  assertEquals((await first).hopLimit, 4);
  assertEquals((await second).hopLimit, 4);
  assertEquals(calls, 1);
});

Deno.test("a caller whose probe was aborted by another caller probes again", async () => {
  const controller = new AbortController();
  let calls = 0;
  const finder = new HopFinder({
    probe: (_r, signal) => {
      calls++;
      if (calls > 1) return Promise.resolve(found(3));
      return new Promise<HopDiscovery>((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason), { once: true })
      );
    },
  });
  const first = finder.hopLimit(undefined, route, controller.signal);
  const second = finder.hopLimit(undefined, route, never);
  controller.abort(new Error("cancelled"));
  await assertRejects(first, { message: "cancelled" });
  assertEquals((await second).hopLimit, 3);
  assertEquals(calls, 2);
});
