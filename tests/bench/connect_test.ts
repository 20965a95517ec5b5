import { assertEquals, assertThrows } from "../assert.ts";
import {
  CONNECT_PAIRS,
  connectTable,
  floorMs,
  foldCell,
  PROCESSING_MS,
  ROUND_TRIPS,
  roundTripsOf,
  type Trial,
  trialOrder,
} from "./connect.ts";

Deno.test("floor: round trips times the RTT plus the processing allowance", () => {
  assertEquals(PROCESSING_MS, 2);
  assertEquals(floorMs(3, 0.5), 3.5);
  assertEquals(floorMs(1.5, 0.2), 2.3);
  assertEquals(floorMs(0, 10), 2);
});

Deno.test("floor: a negative or unknown RTT or count is refused", () => {
  assertThrows(() => floorMs(-1, 1), RangeError);
  assertThrows(() => floorMs(1, -0.1), RangeError);
  assertThrows(() => floorMs(1, NaN), { name: "RangeError", message: /Cannot compute a floor/ });
});

Deno.test("round trips: the counts the module doc derives, relayed ones never fewer", () => {
  assertEquals(ROUND_TRIPS["tcp-nutss"].bench, 3);
  assertEquals(ROUND_TRIPS["tcp-syni"].bench, 2.5);
  assertEquals(ROUND_TRIPS["tcp-prime"].bench, 1.5);
  assertEquals(ROUND_TRIPS.udp.bench, 2);
  assertEquals(ROUND_TRIPS["udp-birthday"].bench, 2);
  for (const [technique, r] of Object.entries(ROUND_TRIPS)) {
    assertEquals(r.viaRendezvous >= r.bench, true, technique);
  }
});

Deno.test("round trips: auto takes the count of the technique that won most often", () => {
  assertEquals(roundTripsOf("auto", { "tcp-syni": 1, "tcp-nutss": 4 }), 3);
  assertEquals(roundTripsOf("auto", { "tcp-syni": 3 }), 2.5);
  assertEquals(roundTripsOf("auto", {}), null);
  assertEquals(roundTripsOf("auto", { relay: 2 }), null);
  assertEquals(roundTripsOf("udp", {}), 2);
});

Deno.test("fold: median and p95 of the successes, errors counted, ratio against the floor", () => {
  const trials: Trial[] = [
    { ok: true, ms: 4 },
    { ok: false, ms: 5000, error: "timed out" },
    { ok: true, ms: 6 },
    { ok: true, ms: 5 },
    { ok: false, ms: 5000, error: "timed out" },
  ];
  const cell = foldCell("tcp-nutss", trials, 1);
  assertEquals(cell.attempts, 5);
  assertEquals(cell.successes, 3);
  assertEquals(cell.medianMs, 5);
  assertEquals(cell.p95Ms, 6);
  assertEquals(cell.roundTrips, 3);
  assertEquals(cell.floorMs, 5);
  assertEquals(cell.ratio, 1);
  assertEquals(cell.errors, { "timed out": 2 });
  assertEquals(cell.times, [4, 6, 5]);
  assertEquals(cell.stopped, false);
});

Deno.test("fold: no success leaves median, p95 and ratio empty but keeps the floor", () => {
  const cell = foldCell("tcp-syni", [{ ok: false, ms: 10, error: "refused" }], 0.2, true);
  assertEquals(cell.medianMs, null);
  assertEquals(cell.p95Ms, null);
  assertEquals(cell.ratio, null);
  assertEquals(cell.floorMs, 2.5);
  assertEquals(cell.stopped, true);
});

Deno.test("fold: auto's winners are counted and set its floor", () => {
  const cell = foldCell("auto", [
    { ok: true, ms: 3, winner: "tcp-prime" },
    { ok: true, ms: 4, winner: "tcp-prime" },
    { ok: true, ms: 9, winner: "tcp-nutss" },
  ], 2);
  assertEquals(cell.winners, { "tcp-prime": 2, "tcp-nutss": 1 });
  assertEquals(cell.roundTrips, 1.5);
  assertEquals(cell.floorMs, 5);
  assertEquals(cell.ratio, 0.8);
});

Deno.test("trial order: every technique once per trial, a different one first each trial", () => {
  assertEquals(trialOrder(0, 3), [0, 1, 2]);
  assertEquals(trialOrder(1, 3), [1, 2, 0]);
  assertEquals(trialOrder(5, 3), [2, 0, 1]);
  for (let t = 0; t < 7; t++) assertEquals([...trialOrder(t, 5)].sort(), [0, 1, 2, 3, 4]);
});

Deno.test("pairs: silent, endpoint-dependent and answering, birthday only where one side is hard", () => {
  assertEquals(CONNECT_PAIRS.map((p) => `${p.a}:${p.b}`), [
    "preserving:preserving",
    "preserving:symmetric",
    "answering:answering",
  ]);
  for (const p of CONNECT_PAIRS) {
    assertEquals(p.techniques.includes("udp-birthday"), p.b === "symmetric");
    for (const t of ["tcp-nutss", "tcp-syni", "tcp-prime", "udp", "auto"] as const) {
      assertEquals(p.techniques.includes(t), true, `${p.a}:${p.b} ${t}`);
    }
  }
});

Deno.test("table: one row per cell with its counts, floor and ratio", () => {
  const rtt = { rttMs: 1, legAMs: 0.5, legBMs: 0.5, probes: 20, lost: 0 };
  const lines = connectTable([{
    a: "preserving",
    b: "preserving",
    rttBefore: rtt,
    rttAfter: rtt,
    rttMs: 1,
    cells: [foldCell("tcp-nutss", [{ ok: true, ms: 6 }], 1)],
  }], 1);
  assertEquals(lines.length, 4);
  assertEquals(lines[1]?.includes("preserving:preserving 1000 µs"), true);
  assertEquals(lines[3]?.split(/\s+/).slice(0, 8), [
    "preserving:preserving",
    "tcp-nutss",
    "1/1",
    "6.0",
    "6.0",
    "3",
    "5.00",
    "1.20",
  ]);
});

Deno.test("fold: each phase's median over the successes that recorded it", () => {
  const cell = foldCell("udp", [
    { ok: true, ms: 10, phases: { offerMs: 1, aOkMs: 9, bOkMs: 10 } },
    { ok: true, ms: 12, phases: { offerMs: 3, aOkMs: 12, bOkMs: 11 } },
    { ok: true, ms: 20, phases: { offerMs: 2, aOkMs: 15, bOkMs: 20 } },
    { ok: false, ms: 5000, error: "timed out" },
  ], 1);
  assertEquals(cell.phasesMs, { offerMs: 2, aOkMs: 12, bOkMs: 11 });
  assertEquals(foldCell("udp", [{ ok: false, ms: 1, error: "x" }], 1).phasesMs, null);
});
