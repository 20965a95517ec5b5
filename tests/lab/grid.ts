/**
 * The traversal grid: every pair of lab NAT profiles against every technique
 * and `auto`, N attempts per cell, compared with what the profiles' behaviour
 * predicts (grid_expect.ts). Writes grid.md, grid.json and grid.html and
 * exits 1 when a check fails (see {@linkcode checkGrid}).
 *
 * ```
 * sudo make grid N=10                       # every pair, into grid/
 * sudo make grid N=2 GRID_ARGS=--relay       # with a TURN server (coturn): auto may end relayed
 * sudo deno run -A tests/lab/grid.ts --n 2 --pairs preserving:symmetric,none:firewall/6 \
 *   --techniques tcp-nutss,auto --out /tmp/grid
 * ```
 *
 * @module
 */

import { integerFlag, parseArgs } from "../../src/cli.ts";
import { PunchdClient, PunchdError } from "../../src/client/client.ts";
import type { NatProfile } from "./lab.ts";
import { punch, readExactly } from "./punch.ts";
import { Lab } from "./lab.ts";
import { type LabServices, startServices } from "./services.ts";
import { startStunServer, type StunServer } from "./stun_server.ts";
import {
  expect,
  type Expectation,
  GRID_TECHNIQUES,
  type GridPair,
  type GridTechnique,
} from "./grid_expect.ts";
import { renderHtml, renderMarkdown } from "./grid_report.ts";

/** How long after punchd's attempt timeout an attempt counts as hung. */
const HANG_MARGIN_MS = 10_000;

/** The profiles paired with each other (hairpin is one pair of its own). */
export const GRID_PROFILES: readonly NatProfile[] = [
  "none",
  "firewall",
  "preserving",
  "shifting",
  "sequential",
  "symmetric",
  "rst",
  "nosimopen",
  "answering",
  "double",
];

/** Every ordered pair of GRID_PROFILES over IPv4, hairpin, and the IPv6 pairs (firewall, NAT66). */
export function allPairs(): GridPair[] {
  const pairs: GridPair[] = [];
  for (const a of GRID_PROFILES) {
    for (const b of GRID_PROFILES) pairs.push({ a, b, family: "inet" });
  }
  pairs.push({ a: "hairpin", b: "hairpin", family: "inet" });
  for (const a of ["none", "firewall", "preserving", "symmetric"] as const) {
    for (const b of ["firewall", "preserving"] as const) pairs.push({ a, b, family: "inet6" });
  }
  return pairs;
}

/** A pair as text: `A:B`, with `/6` for IPv6. */
export function pairName(pair: GridPair): string {
  return `${pair.a}:${pair.b}${pair.family === "inet6" ? "/6" : ""}`;
}

/** Parses `A:B[/6]`; throws SyntaxError for anything else. */
export function parsePair(text: string): GridPair {
  const match = text.match(/^([a-z]+):([a-z]+)(\/6)?$/);
  const known = [...GRID_PROFILES, "hairpin"] as string[];
  if (match === null || !known.includes(match[1] ?? "") || !known.includes(match[2] ?? "")) {
    throw new SyntaxError(
      `Cannot parse pair "${text}": expected A:B or A:B/6 of ${known.join(", ")}`,
    );
  }
  return {
    a: match[1] as NatProfile,
    b: match[2] as NatProfile,
    family: match[3] ? "inet6" : "inet",
  };
}

/** One measured cell. */
export interface Cell extends Expectation {
  pair: string;
  technique: GridTechnique;
  attempts: number;
  /** Attempts that connected (and, over TCP, carried a byte each way). */
  ok: number;
  /** Milliseconds of each success: both endpoint requests and the attempt, as an application waits. */
  times: number[];
  medianMs: number | null;
  /** Milliseconds until each failure was reported (a hard pair should fail fast). */
  failTimes: number[];
  /** Failure reasons and how often each happened. */
  errors: Record<string, number>;
  /** For auto: which technique won, and how often. */
  winners: Record<string, number>;
  /** The daemon does not know the technique (refused as unknown). */
  unsupported: boolean;
}

/** The whole grid run. */
export interface Grid {
  started: string;
  attempts: number;
  timeoutS: number;
  threshold: number;
  pairs: string[];
  techniques: GridTechnique[];
  cells: Cell[];
  /** What checkGrid found wrong; empty when the grid passes. */
  problems: string[];
  /** The daemons had a TURN server (`--relay`). */
  relay?: boolean;
  durationS: number;
}

/** Options of a grid run. */
export interface GridOptions {
  pairs: GridPair[];
  techniques: readonly GridTechnique[];
  attempts: number;
  /** punchd's --attempt-timeout, seconds. */
  timeoutS: number;
  /** The success rate a cell expected to connect must reach. */
  threshold: number;
  /**
   * Run coturn as a TURN server on the internet router and give both daemons `--turn` (IPv4
   * pairs), so `auto` can end relayed; relayed cells are shown apart.
   */
  relay?: boolean;
  /** Called after each cell (progress output). */
  onCell?: (cell: Cell) => void;
}

/** The median of `values` (upper median), null when empty. */
export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((x, y) => x - y);
  return Math.round(sorted[Math.floor(sorted.length / 2)] ?? 0);
}

/** The short reason of a failed attempt. */
function reasonOf(error: unknown): string {
  const text = error instanceof Error ? error.message.split("\n")[0] ?? "" : String(error);
  return text.replace(/^punchd refused \S+: /, "").slice(0, 160);
}

/** Runs every technique in one lab built for `pair`; returns a cell per technique. */
export async function measurePair(pair: GridPair, options: GridOptions): Promise<Cell[]> {
  const relay = options.relay === true && pair.family === "inet";
  const cells: Cell[] = options.techniques.map((technique) => ({
    pair: pairName(pair),
    technique,
    ...expectWithRelay(expect(pair, technique), technique, relay),
    attempts: 0,
    ok: 0,
    times: [],
    medianMs: null,
    failTimes: [],
    errors: {},
    winners: {},
    unsupported: false,
  }));
  await withGridLab(
    pair,
    ["--attempt-timeout", String(options.timeoutS)],
    relay,
    async (lab, firstA, firstB, services) => {
      // Clients of the attempt in flight; replaced after a hang (closing a client cancels its attempts).
      let [a, b] = [firstA, firstB];
      const hangMs = options.timeoutS * 1000 + HANG_MARGIN_MS;
      for (const [index, cell] of cells.entries()) {
        for (let i = 0; i < options.attempts && !cell.unsupported; i++) {
          cell.attempts++;
          const started = performance.now();
          try {
            const attempt = punch(
              a,
              b,
              lab,
              cell.technique,
              index * options.attempts + i,
              pair.family,
            );
            let timer: ReturnType<typeof setTimeout> | undefined;
            const hung = new Promise<"hung">((resolve) => {
              timer = setTimeout(() => resolve("hung"), hangMs);
            });
            const outcome = await Promise.race([attempt, hung]).finally(() => clearTimeout(timer));
            if (outcome === "hung") {
              // Late sockets of the abandoned attempt are closed when they arrive.
              attempt.then((o) => (o.a.close(), o.b.close()), () => {});
              await Promise.all([a.close(), b.close()]);
              a = await PunchdClient.connect(services.a.socketPath);
              b = await PunchdClient.connect(services.b.socketPath);
              throw new Error(
                `hung: no ok or error within ${hangMs} ms (clients closed to cancel it)`,
              );
            }
            try {
              const elapsed = performance.now() - started;
              if (!cell.technique.startsWith("udp") && cell.technique !== "auto-udp") {
                await outcome.a.write(new TextEncoder().encode("g"));
                if (await readExactly(outcome.b, 1) !== "g") {
                  throw new Error(
                    "Cannot read A's byte at B",
                  );
                }
                await outcome.b.write(new TextEncoder().encode("r"));
                if (await readExactly(outcome.a, 1) !== "r") {
                  throw new Error(
                    "Cannot read B's byte at A",
                  );
                }
              }
              cell.ok++;
              cell.times.push(Math.round(elapsed));
              if (outcome.winner !== null) {
                cell.winners[outcome.winner] = (cell.winners[outcome.winner] ?? 0) + 1;
              }
            } finally {
              outcome.a.close();
              outcome.b.close();
            }
          } catch (error) {
            cell.failTimes.push(Math.round(performance.now() - started));
            const reason = reasonOf(error);
            if (
              /unknown technique/i.test(reason) ||
              (!(error instanceof PunchdError) && /technique/i.test(reason))
            ) {
              cell.unsupported = true;
            }
            cell.errors[reason] = (cell.errors[reason] ?? 0) + 1;
          }
        }
        cell.medianMs = median(cell.times);
        options.onCell?.(cell);
      }
      if (a !== firstA) await Promise.all([a.close(), b.close()]);
    },
  );
  return cells;
}

/** With a TURN server, `auto` connects on every IPv4 pair: relayed where nothing else can. */
function expectWithRelay(
  expectation: Expectation,
  technique: GridTechnique,
  relay: boolean,
): Expectation {
  if (!relay || technique !== "auto" || expectation.expected === "ok") return expectation;
  return {
    ...expectation,
    expected: "ok",
    reason: `relayed through the TURN server (${expectation.reason})`,
  };
}

/**
 * A lab for `pair` with its services and a client per daemon, and with `relay` a TURN server
 * (coturn) whose credentials both daemons get; tears all of it down.
 */
async function withGridLab(
  pair: GridPair,
  daemonArgs: string[],
  relay: boolean,
  fn: (lab: Lab, a: PunchdClient, b: PunchdClient, services: LabServices) => Promise<void>,
): Promise<void> {
  await using lab = await Lab.create({ natA: pair.a, natB: pair.b, ipv6: pair.family === "inet6" });
  let coturn: StunServer | undefined;
  const dir = await Deno.makeTempDir({ prefix: "punchd-grid-" });
  try {
    const args = [...daemonArgs];
    if (relay) {
      const password = crypto.randomUUID();
      coturn = await startStunServer(lab, { turn: { user: "grid", password } });
      await Deno.writeTextFile(`${dir}/turn-password`, `${password}\n`, { mode: 0o600 });
      args.push("--turn", coturn.addresses[0], "--turn-user", "grid");
      args.push("--turn-password-file", `${dir}/turn-password`);
    }
    await using services = await startServices(lab, args);
    const a = await PunchdClient.connect(services.a.socketPath);
    const b = await PunchdClient.connect(services.b.socketPath);
    try {
      await fn(lab, a, b, services);
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    await coturn?.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const SINGLE_OF: Record<"auto" | "auto-udp", (t: GridTechnique) => boolean> = {
  auto: (t) => t.startsWith("tcp-"),
  "auto-udp": (t) => t.startsWith("udp"),
};

/**
 * The grid's failure conditions, one line each: a cell expected to connect
 * below the threshold; `auto` (or `auto-udp`) below the threshold on a pair
 * where one of its protocol's single techniques reached it, or never
 * connecting where one connected at all; `auto`'s median time worse than
 * 1.5 times the best single technique's (of those that reached the threshold).
 */
export function checkGrid(cells: Cell[], threshold: number): string[] {
  const problems: string[] = [];
  const rate = (c: Cell) => (c.attempts === 0 ? 0 : c.ok / c.attempts);
  for (const c of cells) {
    if (c.unsupported) continue;
    if (c.expected === "ok" && rate(c) < threshold) {
      problems.push(
        `${c.pair} ${c.technique}: expected to connect (${c.reason}), connected ${c.ok}/${c.attempts}`,
      );
    }
  }
  for (const auto of cells.filter((c) => c.technique === "auto" || c.technique === "auto-udp")) {
    const singles = cells.filter((c) =>
      c.pair === auto.pair && !c.unsupported &&
      SINGLE_OF[auto.technique as "auto" | "auto-udp"](c.technique)
    );
    if (singles.length === 0) continue;
    const name = `${auto.pair} ${auto.technique}`;
    if (auto.unsupported) {
      problems.push(`${name}: the daemon does not know it`);
      continue;
    }
    const reliable = singles.filter((c) => rate(c) >= threshold);
    const anyOk = singles.filter((c) => c.ok > 0);
    if (reliable.length > 0 && rate(auto) < threshold) {
      problems.push(
        `${name}: connected ${auto.ok}/${auto.attempts} where ${
          reliable.map((c) => `${c.technique} ${c.ok}/${c.attempts}`).join(", ")
        }`,
      );
    } else if (anyOk.length > 0 && auto.ok === 0) {
      problems.push(
        `${name}: never connected where ${
          anyOk.map((c) => `${c.technique} ${c.ok}/${c.attempts}`).join(", ")
        }`,
      );
    }
    const best = reliable.filter((c) =>
      c.medianMs !== null
    ).sort((x, y) => (x.medianMs ?? 0) - (y.medianMs ?? 0))[0];
    if (
      best !== undefined && auto.medianMs !== null && auto.medianMs > 1.5 * (best.medianMs ?? 0)
    ) {
      problems.push(
        `${name}: median ${auto.medianMs} ms, worse than 1.5 x ${best.technique}'s ${best.medianMs} ms`,
      );
    }
  }
  return problems;
}

/** Runs the grid: each pair's lab once, every technique in it. */
export async function runGrid(options: GridOptions): Promise<Grid> {
  const started = new Date();
  const cells: Cell[] = [];
  for (const pair of options.pairs) {
    try {
      cells.push(...await measurePair(pair, options));
    } catch (error) {
      // The lab or its daemons did not come up: every cell of the pair failed for that reason.
      for (const technique of options.techniques) {
        cells.push({
          pair: pairName(pair),
          technique,
          ...expect(pair, technique),
          attempts: options.attempts,
          ok: 0,
          times: [],
          medianMs: null,
          failTimes: [],
          errors: { [`lab: ${reasonOf(error)}`]: options.attempts },
          winners: {},
          unsupported: false,
        });
      }
    }
  }
  return {
    started: started.toISOString(),
    attempts: options.attempts,
    timeoutS: options.timeoutS,
    threshold: options.threshold,
    pairs: options.pairs.map(pairName),
    techniques: [...options.techniques],
    cells,
    problems: checkGrid(cells, options.threshold),
    ...(options.relay === true ? { relay: true } : {}),
    durationS: Math.round((Date.now() - started.getTime()) / 1000),
  };
}

/** Writes grid.json, grid.md and grid.html into `dir`. */
export async function writeGrid(grid: Grid, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/grid.json`, JSON.stringify(grid, null, 2) + "\n");
  await Deno.writeTextFile(`${dir}/grid.md`, renderMarkdown(grid));
  await Deno.writeTextFile(`${dir}/grid.html`, renderHtml(grid));
}

if (import.meta.main) {
  const { values: flags } = parseArgs({
    args: Deno.args,
    options: {
      n: { type: "string", default: "10" },
      out: { type: "string", default: "grid" },
      pairs: { type: "string" },
      techniques: { type: "string" },
      timeout: { type: "string", default: "6" },
      threshold: { type: "string", default: "0.7" },
      relay: { type: "boolean", default: false },
    },
  });
  const techniques = flags.techniques === undefined
    ? GRID_TECHNIQUES
    : flags.techniques.split(",").map((t) => {
      if (!GRID_TECHNIQUES.includes(t as GridTechnique)) {
        throw new SyntaxError(`--techniques: unknown technique "${t}"`);
      }
      return t as GridTechnique;
    });
  if (!/^(0(\.[0-9]+)?|1)$/.test(flags.threshold)) {
    throw new RangeError(`--threshold: ${flags.threshold} is not a rate 0-1`);
  }
  const out = (line: string) => Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
  const grid = await runGrid({
    pairs: flags.pairs === undefined ? allPairs() : flags.pairs.split(",").map(parsePair),
    techniques,
    attempts: integerFlag(flags.n, "n", 1, 1000),
    timeoutS: integerFlag(flags.timeout, "timeout", 1, 600),
    threshold: Number(flags.threshold),
    relay: flags.relay,
    onCell: (c) =>
      out(
        `${c.pair.padEnd(24)} ${c.technique.padEnd(13)} ${`${c.ok}/${c.attempts}`.padStart(6)} ` +
          `${c.medianMs === null ? "" : `${c.medianMs} ms`.padStart(8)}  expected ${c.expected}` +
          (c.unsupported ? "  (unknown to the daemon)" : ""),
      ),
  });
  await writeGrid(grid, flags.out);
  out(
    `grid: ${grid.cells.length} cells in ${grid.durationS} s, written to ${flags.out}/grid.{md,json,html}`,
  );
  for (const p of grid.problems) out(`FAIL ${p}`);
  Deno.exit(grid.problems.length === 0 ? 0 : 1);
}
