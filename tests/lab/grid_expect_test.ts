import { assertEquals, assertMatch, assertThrows } from "../assert.ts";
import { expect, GRID_TECHNIQUES, type GridPair } from "./grid_expect.ts";
import { allPairs, type Cell, checkGrid, median, pairName, parsePair } from "./grid.ts";
import { renderHtml, renderMarkdown, verdict } from "./grid_report.ts";

const v4 = (a: GridPair["a"], b: GridPair["b"]): GridPair => ({ a, b, family: "inet" });

Deno.test("expectations: random mapping defeats every TCP technique but birthday probing finds it", () => {
  for (const t of ["tcp-direct", "tcp-nutss", "tcp-syni", "tcp-prime", "udp"] as const) {
    assertEquals(expect(v4("symmetric", "preserving"), t).expected, "fail", t);
  }
  assertEquals(expect(v4("symmetric", "preserving"), "udp-birthday"), {
    expected: "ok",
    reason: "birthday probing finds A's random mapping",
  });
  assertEquals(expect(v4("symmetric", "symmetric"), "udp-birthday").expected, "fail");
  assertEquals(expect(v4("sequential", "symmetric"), "udp-birthday").expected, "fail");
});

Deno.test("expectations: a public unfiltered host is reached directly, but only from a published endpoint", () => {
  assertEquals(expect(v4("shifting", "none"), "tcp-direct").expected, "ok");
  assertEquals(expect(v4("none", "preserving"), "udp").expected, "ok");
  // punchd accepts the peer only from the endpoint it published: a random port is refused.
  assertEquals(expect(v4("symmetric", "none"), "udp").expected, "fail");
  // tcp-direct confirms with its token and takes the peer from any port of its address.
  assertEquals(expect(v4("symmetric", "none"), "tcp-direct").expected, "ok");
  assertEquals(expect(v4("symmetric", "preserving"), "tcp-direct").expected, "fail");
  assertEquals(expect(v4("none", "symmetric"), "udp").expected, "fail");
  assertEquals(expect(v4("none", "sequential"), "udp").expected, "maybe");
});

Deno.test("expectations: simultaneous open decides tcp-syni by the responder's NAT, tcp-nutss by both", () => {
  assertEquals(expect(v4("preserving", "nosimopen"), "tcp-syni").expected, "fail");
  assertEquals(expect(v4("nosimopen", "preserving"), "tcp-syni").expected, "ok");
  assertEquals(expect(v4("preserving", "nosimopen"), "tcp-nutss").expected, "ok");
  assertEquals(expect(v4("nosimopen", "nosimopen"), "tcp-nutss").expected, "fail");
  assertEquals(expect(v4("preserving", "nosimopen"), "tcp-prime").expected, "ok");
  assertEquals(expect(v4("nosimopen", "nosimopen"), "tcp-prime").expected, "fail");
  assertEquals(expect(v4("preserving", "nosimopen"), "udp-prime").expected, "ok");
});

Deno.test("expectations: a carrier-grade NAT needs the discovered hop count", () => {
  assertEquals(expect(v4("double", "preserving"), "tcp-nutss").expected, "ok");
  assertMatch(expect(v4("double", "preserving"), "tcp-nutss").reason, /discovered hop count/);
  assertEquals(expect(v4("preserving", "double"), "tcp-syni").expected, "ok");
  assertMatch(expect(v4("preserving", "double"), "tcp-syni").reason, /discovered hop count/);
  assertEquals(expect(v4("preserving", "double"), "udp-prime").expected, "ok");
});

Deno.test("expectations: sequential mappings are not decided by the behaviours alone", () => {
  for (const t of GRID_TECHNIQUES) {
    if (t === "auto" || t === "auto-udp") continue;
    assertEquals(expect(v4("sequential", "preserving"), t).expected, "maybe", t);
  }
});

Deno.test("expectations: auto expects what its protocol's single techniques expect", () => {
  assertMatch(expect(v4("preserving", "preserving"), "auto").reason, /^tcp-direct, tcp-nutss/);
  assertEquals(expect(v4("symmetric", "symmetric"), "auto").expected, "fail");
  assertEquals(expect(v4("symmetric", "preserving"), "auto-udp").expected, "ok");
  assertEquals(expect(v4("sequential", "preserving"), "auto").expected, "maybe");
});

Deno.test("expectations: every cell of the full grid has a reason", () => {
  for (const pair of allPairs()) {
    for (const t of GRID_TECHNIQUES) {
      const e = expect(pair, t);
      assertMatch(e.reason, /\w/, `${pairName(pair)} ${t}`);
    }
  }
  assertEquals(allPairs().length, 10 * 10 + 1 + 8);
});

Deno.test("pairs parse from A:B and A:B/6 and nothing else", () => {
  assertEquals(parsePair("none:firewall/6"), { a: "none", b: "firewall", family: "inet6" });
  assertEquals(pairName(parsePair("hairpin:hairpin")), "hairpin:hairpin");
  assertThrows(() => parsePair("none:moon"), SyntaxError, 'Cannot parse pair "none:moon"');
  assertThrows(() => parsePair("none firewall"), SyntaxError);
});

function cell(technique: Cell["technique"], ok: number, times: number[], more: Partial<Cell> = {}) {
  return {
    pair: "p:q",
    technique,
    expected: "maybe",
    reason: "r",
    attempts: 10,
    ok,
    times,
    medianMs: median(times),
    failTimes: [],
    errors: {},
    winners: {},
    unsupported: false,
    ...more,
  } as Cell;
}

Deno.test("checks: an expected success below the threshold fails the grid", () => {
  const cells = [cell("tcp-nutss", 6, [10], { expected: "ok" })];
  assertEquals(checkGrid(cells, 0.7), [
    "p:q tcp-nutss: expected to connect (r), connected 6/10",
  ]);
  assertEquals(checkGrid(cells, 0.6), []);
  // An expected failure that connects is reported in the page, not a failed check.
  assertEquals(checkGrid([cell("tcp-nutss", 10, [10], { expected: "fail" })], 0.7), []);
});

Deno.test("checks: auto must connect where a single technique of its protocol did", () => {
  const single = cell("tcp-syni", 10, [100, 100, 100]);
  assertEquals(checkGrid([single, cell("auto", 5, [100])], 0.7), [
    "p:q auto: connected 5/10 where tcp-syni 10/10",
  ]);
  assertEquals(checkGrid([cell("udp", 2, [100]), cell("auto-udp", 0, [])], 0.7), [
    "p:q auto-udp: never connected where udp 2/10",
  ]);
  // A TCP technique says nothing about auto-udp.
  assertEquals(checkGrid([single, cell("auto-udp", 0, [])], 0.7), []);
  assertEquals(
    checkGrid([single, cell("auto", 10, [], { unsupported: true })], 0.7),
    ["p:q auto: the daemon does not know it"],
  );
});

Deno.test("checks: auto's median must be within 1.5 times the best reliable single technique's", () => {
  const singles = [
    cell("tcp-nutss", 10, [100]),
    cell("tcp-syni", 10, [200]),
    cell("tcp-direct", 1, [10]),
  ];
  assertEquals(checkGrid([...singles, cell("auto", 10, [150])], 0.7), []);
  assertEquals(checkGrid([...singles, cell("auto", 10, [151])], 0.7), [
    "p:q auto: median 151 ms, worse than 1.5 x tcp-nutss's 100 ms",
  ]);
});

Deno.test("the report marks each cell against its expectation and escapes text in HTML", () => {
  assertEquals(verdict(cell("udp", 7, [1], { expected: "ok" }), 0.7), "as-expected");
  assertEquals(verdict(cell("udp", 6, [1], { expected: "ok" }), 0.7), "missed");
  assertEquals(verdict(cell("udp", 1, [1], { expected: "fail" }), 0.7), "surprise");
  const grid = {
    started: "2026-01-01T00:00:00Z",
    attempts: 10,
    timeoutS: 6,
    threshold: 0.7,
    pairs: ["p:q"],
    techniques: ["udp" as const],
    cells: [cell("udp", 0, [], { expected: "ok", errors: { "<timed out>": 10 } })],
    problems: ["p:q udp: expected to connect (r), connected 0/10"],
    durationS: 1,
  };
  const html = renderHtml(grid);
  assertMatch(html, /<td class="missed"[^>]*><div class="rate">0\/10<\/div>/);
  assertMatch(html, /&lt;timed out&gt;/);
  assertEquals(html.includes("<timed out>"), false);
  assertMatch(renderMarkdown(grid), /\| p:q \| ❌ 0\/10 \|/);
});

Deno.test("expectations: a public A in B's private block leaves B's priming TTL at 2", () => {
  assertEquals(expect(v4("none", "double"), "tcp-syni").expected, "fail");
  assertEquals(expect(v4("firewall", "double"), "udp-prime").expected, "fail");
  assertEquals(expect(v4("none", "double"), "tcp-prime").expected, "ok");
  assertEquals(expect(v4("preserving", "double"), "tcp-syni").expected, "ok");
});
