import { assertEquals, assertThrows } from "../assert.ts";
import { ExpiringCache } from "../../src/discovery/hop_cache.ts";

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

Deno.test("a cached value is returned until it expires, then forgotten", () => {
  const c = clock();
  const cache = new ExpiringCache<number>({ now: c.now });
  cache.set("a", 3, 500);
  c.advance(499);
  assertEquals(cache.get("a"), 3);
  c.advance(1);
  assertEquals(cache.get("a"), undefined);
  assertEquals(cache.size, 0);
});

Deno.test("each entry expires on its own time", () => {
  const c = clock();
  const cache = new ExpiringCache<string>({ now: c.now });
  cache.set("known", "3", 600_000);
  cache.set("unknown", "?", 30_000);
  c.advance(30_000);
  assertEquals(cache.get("unknown"), undefined);
  assertEquals(cache.get("known"), "3");
});

Deno.test("a full cache drops the least recently used entry", () => {
  const c = clock();
  const cache = new ExpiringCache<number>({ maxEntries: 2, now: c.now });
  cache.set("a", 1, 1000);
  cache.set("b", 2, 1000);
  assertEquals(cache.get("a"), 1); // a is now the most recently used
  cache.set("c", 3, 1000);
  assertEquals(cache.get("b"), undefined);
  assertEquals(cache.get("a"), 1);
  assertEquals(cache.get("c"), 3);
  assertEquals(cache.size, 2);
});

Deno.test("a full cache drops expired entries before live ones", () => {
  const c = clock();
  const cache = new ExpiringCache<number>({ maxEntries: 2, now: c.now });
  cache.set("live", 1, 10_000);
  cache.set("old", 2, 10);
  c.advance(20);
  assertEquals(cache.get("live"), 1);
  cache.set("x", 3, 10_000);
  cache.set("y", 4, 10_000);
  assertEquals(cache.size, 2);
  assertEquals(cache.get("x"), 3);
  assertEquals(cache.get("y"), 4);
});

Deno.test("setting a key again replaces its value and expiry without growing", () => {
  const c = clock();
  const cache = new ExpiringCache<number>({ maxEntries: 2, now: c.now });
  cache.set("a", 1, 10);
  cache.set("a", 2, 1000);
  c.advance(500);
  assertEquals(cache.get("a"), 2);
  assertEquals(cache.size, 1);
});

Deno.test("bad sizes and lifetimes are RangeErrors", () => {
  assertThrows(() => new ExpiringCache({ maxEntries: 0 }), {
    name: "RangeError",
    message: /at least 1/,
  });
  assertThrows(() => new ExpiringCache().set("a", 1, 0), {
    name: "RangeError",
    message: /must be positive/,
  });
  assertThrows(() => new ExpiringCache().set("a", 1, NaN), {
    name: "RangeError",
    message: /must be positive/,
  });
});
