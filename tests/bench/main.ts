/**
 * `make bench`: runs the bench sections in order, prints one combined
 * report (title, the machine, each section's table) and writes it as JSON.
 *
 * ```
 * sudo make bench                                   # every section, 50 trials per cell
 * sudo make bench BENCH_ARGS="--quick"              # a smoke run: 3 trials, small loads
 * sudo deno run --allow-all tests/bench/main.ts --only connect,startup --trials 20 --json /tmp/b.json
 * ```
 *
 * Flags: `--trials N` (default 50; 3 with `--quick` unless given),
 * `--quick`, `--only a,b,c` (section names, in {@linkcode SECTIONS}' order
 * whatever order they are named in), `--json FILE` (default
 * build/bench/latest.json). Each section is a module
 * `tests/bench/<name>.ts` exporting `section` (section.ts), imported when
 * its turn comes; a module that does not exist is reported as "not built"
 * and skipped, and a section that throws is reported as failed (its error
 * in the JSON) while the others run. Exits 1 when a section failed.
 *
 * Progress goes to stderr, the report to stdout.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { BenchContext, Section, SectionResult } from "./section.ts";

/** The sections, in the order they run; each is `tests/bench/<name>.ts`. */
export const SECTIONS = [
  "connect",
  "startup",
  "load",
  "memory",
  "fairness",
  "syni",
  "peers",
] as const;

/** A section's name. */
export type SectionName = typeof SECTIONS[number];

/** Options of a bench run. */
export interface BenchOptions {
  trials: number;
  quick: boolean;
  only: SectionName[];
  json: string;
}

/** Trials per cell with `--quick` when `--trials` is not given. */
export const QUICK_TRIALS = 3;
/** Trials per cell of a full run. */
export const DEFAULT_TRIALS = 50;
/** Where the JSON report goes by default (relative to the working directory). */
export const DEFAULT_JSON = "build/bench/latest.json";

/** Parses the command line; throws SyntaxError or RangeError on a bad flag. */
export function parseBenchArgs(args: string[]): BenchOptions {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      trials: { type: "string" },
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      json: { type: "string", default: DEFAULT_JSON },
    },
  });
  let trials = values.quick ? QUICK_TRIALS : DEFAULT_TRIALS;
  if (values.trials !== undefined) {
    if (!/^[1-9][0-9]{0,5}$/.test(values.trials)) {
      throw new RangeError(`--trials: "${values.trials}" is not a whole number 1-999999`);
    }
    trials = Number(values.trials);
  }
  let only: SectionName[] = [...SECTIONS];
  if (values.only !== undefined) {
    const named = values.only.split(",");
    for (const name of named) {
      if (!(SECTIONS as readonly string[]).includes(name)) {
        throw new SyntaxError(`--only: unknown section "${name}"; known: ${SECTIONS.join(", ")}`);
      }
    }
    only = SECTIONS.filter((s) => named.includes(s));
  }
  if (values.json === "") throw new SyntaxError("--json: empty file name");
  return { trials, quick: values.quick, only, json: values.json };
}

/** What the report says about the machine it ran on. */
export interface MachineInfo {
  kernel: string;
  cpu: string;
  cores: number;
  deno: string;
  date: string;
}

/** The CPU model from /proc/cpuinfo's text (first `model name`, else `Hardware`/`cpu model`). */
export function cpuModel(cpuinfo: string): string {
  const match = cpuinfo.match(/^(?:model name|Hardware|cpu model)\s*:\s*(.+)$/m);
  return match?.[1]?.trim() ?? "unknown";
}

/** The machine this process runs on. */
export async function machineInfo(): Promise<MachineInfo> {
  const uname = await new Deno.Command("uname", { args: ["-r"], stderr: "null" }).output()
    .then((o) => new TextDecoder().decode(o.stdout).trim(), () => "unknown");
  let cpu = "unknown";
  try {
    cpu = cpuModel(await Deno.readTextFile("/proc/cpuinfo"));
  } catch {
    // No /proc/cpuinfo: "unknown".
  }
  return {
    kernel: uname || "unknown",
    cpu,
    cores: navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    date: new Date().toISOString(),
  };
}

/** One section's entry in the report. */
export type SectionOutcome =
  | { name: SectionName; status: "ok"; seconds: number; result: SectionResult }
  | { name: SectionName; status: "not built" }
  | { name: SectionName; status: "failed"; seconds: number; error: string };

/** Imports `tests/bench/<name>.ts`'s `section`; null when the module does not exist. */
export async function loadSection(name: SectionName): Promise<Section | null> {
  const url = new URL(`./${name}.ts`, import.meta.url);
  try {
    await Deno.stat(url);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
  const module = await import(url.href) as { section?: unknown };
  if (typeof module.section !== "function") {
    throw new TypeError(`Cannot run section ${name}: ${url.pathname} exports no section function`);
  }
  return module.section as Section;
}

/** Runs the sections of `options` in order; never throws for one section's failure. */
export async function runSections(
  options: BenchOptions,
  log: (line: string) => void,
  load: (name: SectionName) => Promise<Section | null> = loadSection,
): Promise<SectionOutcome[]> {
  const outcomes: SectionOutcome[] = [];
  for (const name of options.only) {
    const started = performance.now();
    const seconds = () => Math.round((performance.now() - started) / 100) / 10;
    try {
      const section = await load(name);
      if (section === null) {
        log(`bench: ${name}: not built (no tests/bench/${name}.ts), skipped`);
        outcomes.push({ name, status: "not built" });
        continue;
      }
      log(`bench: ${name}: running`);
      const context: BenchContext = {
        trials: options.trials,
        quick: options.quick,
        log: (line) => log(`  ${line}`),
      };
      const result = await section(context);
      outcomes.push({ name, status: "ok", seconds: seconds(), result });
      log(`bench: ${name}: done in ${seconds()} s`);
    } catch (error) {
      const text = error instanceof Error ? error.stack ?? error.message : String(error);
      log(`bench: ${name}: failed: ${text}`);
      outcomes.push({ name, status: "failed", seconds: seconds(), error: text });
    }
  }
  return outcomes;
}

/** The printed report. */
export function renderReport(
  machine: MachineInfo,
  options: BenchOptions,
  outcomes: readonly SectionOutcome[],
): string[] {
  const lines = [
    `punchd bench${options.quick ? " (quick: a smoke run, numbers not meaningful)" : ""}`,
    `machine: Linux ${machine.kernel}, ${machine.cpu}, ${machine.cores} cores; deno ${machine.deno}; ${machine.date}`,
    `trials per cell: ${options.trials}`,
  ];
  for (const o of outcomes) {
    lines.push("");
    if (o.status === "ok") lines.push(...o.result.table, `(${o.name}: ${o.seconds} s)`);
    else if (o.status === "not built") lines.push(`${o.name}: not built`);
    else lines.push(`${o.name}: FAILED after ${o.seconds} s: ${o.error.split("\n")[0]}`);
  }
  return lines;
}

/** The JSON report: the machine, the options, and each section under its name. */
export function reportJson(
  machine: MachineInfo,
  options: BenchOptions,
  outcomes: readonly SectionOutcome[],
): unknown {
  const sections: Record<string, unknown> = {};
  for (const o of outcomes) {
    sections[o.name] = o.status === "ok"
      ? { status: "ok", seconds: o.seconds, result: o.result.json }
      : o.status === "failed"
      ? { status: "failed", seconds: o.seconds, error: o.error }
      : { status: "not built" };
  }
  return {
    machine,
    trials: options.trials,
    quick: options.quick,
    sections,
  };
}

if (import.meta.main) {
  const encoder = new TextEncoder();
  const log = (line: string) => Deno.stderr.writeSync(encoder.encode(`${line}\n`));
  let options: BenchOptions;
  try {
    options = parseBenchArgs(Deno.args);
  } catch (error) {
    log(`bench: ${(error as Error).message}`);
    Deno.exit(2);
  }
  if (Deno.uid() !== 0) {
    log("bench: needs root (network namespaces and nftables), like punchd: run sudo make bench");
    Deno.exit(2);
  }
  const machine = await machineInfo();
  const outcomes = await runSections(options, log);
  const report = renderReport(machine, options, outcomes);
  Deno.stdout.writeSync(encoder.encode(report.join("\n") + "\n"));
  const dir = options.json.includes("/")
    ? options.json.slice(0, options.json.lastIndexOf("/"))
    : "";
  if (dir !== "") await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    options.json,
    JSON.stringify(reportJson(machine, options, outcomes), null, 2) + "\n",
  );
  log(`bench: JSON written to ${options.json}`);
  Deno.exit(outcomes.some((o) => o.status === "failed") ? 1 : 0);
}
