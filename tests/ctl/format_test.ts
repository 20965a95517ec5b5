import { assert, assertEquals, assertMatch } from "../assert.ts";
import { formatDuration, formatReport, formatStatus, formatTable } from "../../src/ctl/format.ts";
import type { DaemonStatus, NatReport, TechniqueCounters } from "../../src/control/status.ts";

function counters(over: Partial<TechniqueCounters> = {}): TechniqueCounters {
  return {
    attempts: 0,
    ok: 0,
    cancelled: 0,
    failed: { timeout: 0, refused: 0, unreachable: 0, peer: 0, resources: 0, other: 0 },
    connectMs: null,
    relayed: 0,
    ...over,
  };
}

const STATUS: DaemonStatus = {
  version: "0.1.0",
  pid: 4242,
  uptimeSecs: 3725,
  clients: 2,
  attempts: 1,
  guards: 12,
  techniques: {
    "tcp-direct": counters({
      attempts: 3,
      ok: 2,
      failed: { timeout: 1, refused: 0, unreachable: 0, peer: 0, resources: 0, other: 0 },
      connectMs: { p50: 12, p90: 40, p99: 40, max: 40 },
    }),
    "tcp-syni": counters(),
    auto: counters({
      attempts: 5,
      ok: 4,
      cancelled: 1,
      connectMs: { p50: 35, p90: 1200, p99: 1200, max: 1200 },
      won: { "tcp-direct": 1, "tcp-nutss": 3 },
      relayed: 1,
    }),
  },
  available: { "tcp-direct": true, "tcp-syni": "needs CAP_NET_RAW", relay: "needs --turn" },
};

Deno.test("formatDuration writes days, hours, minutes and seconds from the largest non-zero unit", () => {
  assertEquals(formatDuration(0), "0s");
  assertEquals(formatDuration(42), "42s");
  assertEquals(formatDuration(3600), "1h 0m 0s");
  assertEquals(formatDuration(3725), "1h 2m 5s");
  assertEquals(formatDuration(90061.9), "1d 1h 1m 1s");
});

Deno.test("formatTable aligns the first column left and the others right, or all left", () => {
  assertEquals(formatTable([["name", "n"], ["tcp-direct", "12"], ["a", "3"]]), [
    "name         n",
    "tcp-direct  12",
    "a            3",
  ]);
  assertEquals(formatTable([["name", "value"], ["public address", "1.2.3.4"]], "left"), [
    "name            value",
    "public address  1.2.3.4",
  ]);
});

Deno.test("formatStatus heads with version, pid, uptime and what is held now", () => {
  const lines = formatStatus(STATUS).split("\n");
  assertEquals(lines[0], "punchd 0.1.0, pid 4242, up 1h 2m 5s");
  assertEquals(lines[1], "clients 2, attempts in flight 1, firewall guards 12");
});

Deno.test("formatStatus has one table row per technique with counts and percentiles, - before any success", () => {
  const text = formatStatus(STATUS);
  assertMatch(
    text,
    /^technique\s+attempts\s+ok\s+failed\s+cancelled\s+p50 ms\s+p90 ms\s+p99 ms\s+max ms$/m,
  );
  assertMatch(text, /^tcp-direct\s+3\s+2\s+1\s+0\s+12\s+40\s+40\s+40$/m);
  assertMatch(text, /^tcp-syni\s+0\s+0\s+0\s+0\s+-\s+-\s+-\s+-$/m);
  assertMatch(text, /^auto\s+5\s+4\s+0\s+1\s+35\s+1200\s+1200\s+1200$/m);
});

Deno.test("formatStatus lists failures by reason class, auto's winners, relays and what cannot run", () => {
  const text = formatStatus(STATUS);
  assertMatch(text, /failures by reason:\n {2}tcp-direct: timeout 1\n/);
  assertMatch(text, /winners:\n {2}auto connected with: tcp-nutss 3, tcp-direct 1\n/);
  assertMatch(text, / {2}auto: 1 relayed through TURN/);
  assertMatch(text, /cannot run here:\n {2}tcp-syni: needs CAP_NET_RAW\n {2}relay: needs --turn$/);
  assert(!/tcp-direct: true/.test(text), text);
});

Deno.test("formatStatus leaves out empty sections", () => {
  const text = formatStatus({
    ...STATUS,
    techniques: { udp: counters({ attempts: 1, ok: 1 }) },
    available: { udp: true },
  });
  assert(!text.includes("failures by reason"), text);
  assert(!text.includes("winners"), text);
  assert(!text.includes("cannot run here"), text);
});

const REPORT: NatReport = {
  servers: ["172.16.0.1:7001", "172.16.0.1:7002"],
  ipv4: {
    public: "172.16.1.2",
    mapping: "preserving",
    tcpMapping: "delta+1",
    rfc5780: { mapping: "eim", filtering: "apdf" },
    portPreservation: true,
    hairpin: null,
    hops: 2,
    notes: ["one server has no OTHER-ADDRESS"],
  },
  ipv6: {
    public: null,
    mapping: null,
    tcpMapping: null,
    rfc5780: null,
    portPreservation: null,
    hairpin: false,
    hops: null,
    notes: [],
  },
  ms: 812,
};

Deno.test("formatReport names the servers and the time taken", () => {
  assertEquals(
    formatReport(REPORT).split("\n")[0],
    "NAT report from 2 discovery servers (172.16.0.1:7001, 172.16.0.1:7002) in 812 ms",
  );
  assertMatch(
    formatReport({ ...REPORT, servers: [] }),
    /^NAT report from no discovery servers \(punchd runs without --stun or --probe\) in 812 ms/,
  );
});

Deno.test("formatReport spells out each family's behaviour", () => {
  const text = formatReport(REPORT);
  const ipv4 = text.slice(text.indexOf("IPv4\n"), text.indexOf("IPv6\n"));
  assertMatch(ipv4, /^ {2}public address {5}172\.16\.1\.2$/m);
  assertMatch(ipv4, /^ {2}UDP port mapping\s+preserving \(public port = local port\)$/m);
  assertMatch(
    ipv4,
    /^ {2}TCP port mapping\s+delta\+1 \(each new flow takes the next public port, \+1\)$/m,
  );
  assertMatch(
    ipv4,
    /^ {2}RFC 5780\s+eim mapping \(endpoint-independent\), apdf filtering \(address and port-dependent\)$/m,
  );
  assertMatch(ipv4, /^ {2}port preservation\s+yes$/m);
  assertMatch(ipv4, /^ {2}hairpinning\s+not testable$/m);
  assertMatch(ipv4, /^ {2}hops to leave NAT\s+2$/m);
  assertMatch(ipv4, /^ {2}note: one server has no OTHER-ADDRESS$/m);
});

Deno.test("formatReport says unknown for what discovery could not tell", () => {
  const text = formatReport(REPORT);
  const ipv6 = text.slice(text.indexOf("IPv6\n"));
  assertMatch(ipv6, /^ {2}public address\s+none found$/m);
  assertMatch(ipv6, /^ {2}UDP port mapping\s+unknown$/m);
  assertMatch(ipv6, /^ {2}TCP port mapping\s+unknown$/m);
  assertMatch(ipv6, /^ {2}RFC 5780\s+unknown \(no server with OTHER-ADDRESS\)$/m);
  assertMatch(ipv6, /^ {2}port preservation\s+unknown$/m);
  assertMatch(ipv6, /^ {2}hairpinning\s+no$/m);
  assertMatch(ipv6, /^ {2}hops to leave NAT\s+unknown$/m);
});

Deno.test("formatReport explains every mapping class", () => {
  const mapping = (m: string) =>
    /UDP port mapping\s+(.*)$/m.exec(
      formatReport({ ...REPORT, ipv4: { ...REPORT.ipv4, mapping: m } }),
    )
      ?.[1];
  assertEquals(mapping("none"), "none (not behind a NAT)");
  assertEquals(mapping("consistent"), "consistent (same public port for every destination)");
  assertEquals(mapping("random"), "random (a new public port per destination: symmetric NAT)");
  assertEquals(mapping("delta+1"), "delta+1 (each new flow takes the next public port, +1)");
});
