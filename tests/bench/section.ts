/**
 * The shape every part of `make bench` shares: a section runs with a
 * context and returns its JSON (written to the report file) and its lines
 * of the printed table. `tests/bench/main.ts` runs the sections in turn.
 *
 * @module
 */

/** What a section gets from the bench runner. */
export interface BenchContext {
  /** Trials per cell (the runner's `--trials`, at least 50 for a full run). */
  trials: number;
  /** A short smoke run: few trials, small loads; numbers are not meaningful. */
  quick: boolean;
  /** Progress for the operator (stderr); never part of the report. */
  log(line: string): void;
}

/** What a section returns. */
export interface SectionResult {
  /** Short name, also the key of the section in the JSON report. */
  name: string;
  /** JSON-able results (numbers in milliseconds, bytes or counts; units in the key names). */
  json: unknown;
  /** Lines of the printed report (a title line first, then an aligned table). */
  table: string[];
}

/** One section of the bench. */
export type Section = (context: BenchContext) => Promise<SectionResult>;

/** Nearest-rank percentile `p` (0-100) of `values`; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

/** The median (nearest rank, p50) of `values`; NaN when empty. */
export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** Formats rows as an aligned text table (first row is the header). */
export function alignTable(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => widths[i] = Math.max(widths[i] ?? 0, cell.length));
  }
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join("  ").trimEnd());
}
