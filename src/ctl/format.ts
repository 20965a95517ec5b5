/**
 * punchctl's readable output of punchd's `status` and `report` replies (on a
 * terminal; `--json` prints the reply itself). Pure functions of the reply
 * objects: no I/O.
 *
 * @module
 */

import type {
  DaemonStatus,
  FamilyReport,
  NatReport,
  TechniqueCounters,
} from "../control/status.ts";

/** `3725` → `1h 2m 5s`; `90061` → `1d 1h 1m 1s`; `42` → `42s`. */
export function formatDuration(totalSecs: number): string {
  let secs = Math.max(0, Math.floor(totalSecs));
  const parts: string[] = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]] as const) {
    const count = Math.floor(secs / size);
    secs -= count * size;
    if (count > 0 || parts.length > 0) parts.push(`${count}${unit}`);
  }
  parts.push(`${secs}s`);
  return parts.join(" ");
}

/**
 * Lays out rows as columns separated by two spaces; the first column left aligned, the others
 * right (numbers) or left (`align: "left"`, text).
 */
export function formatTable(
  rows: readonly (readonly string[])[],
  align: "right" | "left" = "right",
): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => widths[i] = Math.max(widths[i] ?? 0, cell.length));
  }
  return rows.map((row) =>
    row.map((cell, i) =>
      i === 0 || align === "left" ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)
    )
      .join("  ").trimEnd()
  );
}

function failedTotal(counters: TechniqueCounters): number {
  return Object.values(counters.failed).reduce((sum, n) => sum + n, 0);
}

/** `timeout 2, refused 1` (classes with a count of 0 left out), or "" when none failed. */
function failureBreakdown(counters: TechniqueCounters): string {
  return Object.entries(counters.failed).filter(([, n]) => n > 0).map(([why, n]) => `${why} ${n}`)
    .join(", ");
}

/**
 * The status as text for people:
 * ```
 * punchd 0.1.0, pid 4242, up 1h 2m 5s
 * clients 2, attempts in flight 1, firewall guards 12
 *
 * technique    attempts  ok  failed  cancelled  p50 ms  p90 ms  p99 ms  max ms
 * tcp-direct          3   2       1          0      12      40      40      40
 * ...
 * ```
 * followed by the failures by reason, which techniques auto picked, and why
 * the techniques that cannot run here cannot.
 */
export function formatStatus(status: DaemonStatus): string {
  const lines = [
    `punchd ${status.version}, pid ${status.pid}, up ${formatDuration(status.uptimeSecs)}`,
    `clients ${status.clients}, attempts in flight ${status.attempts}, firewall guards ${status.guards}`,
    "",
  ];
  const names = Object.keys(status.techniques);
  const rows = [[
    "technique",
    "attempts",
    "ok",
    "failed",
    "cancelled",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
  ]];
  for (const name of names) {
    const c = status.techniques[name];
    if (c === undefined) continue;
    const ms = c.connectMs;
    rows.push([
      name,
      String(c.attempts),
      String(c.ok),
      String(failedTotal(c)),
      String(c.cancelled),
      ms === null ? "-" : String(ms.p50),
      ms === null ? "-" : String(ms.p90),
      ms === null ? "-" : String(ms.p99),
      ms === null ? "-" : String(ms.max),
    ]);
  }
  lines.push(...formatTable(rows));
  const failures = names.flatMap((name) => {
    const c = status.techniques[name];
    const text = c === undefined ? "" : failureBreakdown(c);
    return text === "" ? [] : [`  ${name}: ${text}`];
  });
  if (failures.length > 0) lines.push("", "failures by reason:", ...failures);
  const extras = names.flatMap((name) => {
    const c = status.techniques[name];
    if (c === undefined) return [];
    const out: string[] = [];
    if (c.won !== undefined && Object.keys(c.won).length > 0) {
      const won = Object.entries(c.won).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
        .map(([t, n]) => `${t} ${n}`).join(", ");
      out.push(`  ${name} connected with: ${won}`);
    }
    if ((c.relayed ?? 0) > 0) out.push(`  ${name}: ${c.relayed} relayed through TURN`);
    return out;
  });
  if (extras.length > 0) lines.push("", "winners:", ...extras);
  const unavailable = Object.entries(status.available).filter(([, why]) => why !== true);
  if (unavailable.length > 0) {
    lines.push("", "cannot run here:", ...unavailable.map(([name, why]) => `  ${name}: ${why}`));
  }
  return lines.join("\n");
}

const MAPPING_NAMES: Record<string, string> = {
  eim: "endpoint-independent",
  adm: "address-dependent",
  apdm: "address and port-dependent",
};
const FILTERING_NAMES: Record<string, string> = {
  eif: "endpoint-independent",
  adf: "address-dependent",
  apdf: "address and port-dependent",
};

function yesNo(value: boolean | null, unknown: string): string {
  return value === null ? unknown : value ? "yes" : "no";
}

function describeMapping(mapping: string | null): string {
  if (mapping === null) return "unknown";
  if (mapping === "none") return "none (not behind a NAT)";
  if (mapping === "preserving") return "preserving (public port = local port)";
  if (mapping === "consistent") return "consistent (same public port for every destination)";
  if (mapping === "random") return "random (a new public port per destination: symmetric NAT)";
  const delta = /^delta([+-][0-9]+)$/.exec(mapping);
  if (delta !== null) return `${mapping} (each new flow takes the next public port, ${delta[1]})`;
  return mapping;
}

function familyLines(name: string, family: FamilyReport): string[] {
  const rfc = family.rfc5780;
  const rows = [
    ["public address", family.public ?? "none found"],
    ["UDP port mapping", describeMapping(family.mapping)],
    ["TCP port mapping", describeMapping(family.tcpMapping ?? null)],
    [
      "RFC 5780",
      rfc === null
        ? "unknown (no server with OTHER-ADDRESS)"
        : `${rfc.mapping} mapping (${
          MAPPING_NAMES[rfc.mapping] ?? "?"
        }), ${rfc.filtering} filtering (${FILTERING_NAMES[rfc.filtering] ?? "?"})`,
    ],
    ["port preservation", yesNo(family.portPreservation, "unknown")],
    ["hairpinning", yesNo(family.hairpin, "not testable")],
    ["hops to leave NAT", family.hops === null ? "unknown" : String(family.hops)],
  ];
  return [
    name,
    ...formatTable(rows, "left").map((line) => `  ${line}`),
    ...family.notes.map((note) => `  note: ${note}`),
  ];
}

/**
 * The NAT report as text for people:
 * ```
 * NAT report from 2 discovery servers (172.16.0.1:7001, 172.16.0.1:7002) in 812 ms
 *
 * IPv4
 *   public address     172.16.1.2
 *   UDP port mapping   preserving (public port = local port)
 *   ...
 * ```
 */
export function formatReport(report: NatReport): string {
  const servers = report.servers.length === 0
    ? "no discovery servers (punchd runs without --stun or --probe)"
    : `${report.servers.length} discovery server${report.servers.length === 1 ? "" : "s"} (${
      report.servers.join(", ")
    })`;
  return [
    `NAT report from ${servers} in ${report.ms} ms`,
    "",
    ...familyLines("IPv4", report.ipv4),
    "",
    ...familyLines("IPv6", report.ipv6),
  ].join("\n");
}
