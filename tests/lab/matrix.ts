/**
 * Measures which NAT profile pairs each TCP technique traverses in the lab
 * and prints a Markdown table (README's traversal table comes from it).
 *
 * ```
 * sudo deno run -A tests/lab/matrix.ts [attempts]
 * ```
 *
 * @module
 */

import type { TechniqueName } from "../../src/control/codec.ts";
import type { NatProfile } from "./lab.ts";
import { punch, withLab } from "./punch.ts";

const PAIRS: [NatProfile, NatProfile][] = [
  ["preserving", "preserving"],
  ["none", "preserving"],
  ["preserving", "none"],
  ["rst", "preserving"],
  ["preserving", "rst"],
  ["nosimopen", "preserving"],
  ["preserving", "nosimopen"],
  ["nosimopen", "nosimopen"],
  ["symmetric", "preserving"],
  ["preserving", "symmetric"],
];
const TECHNIQUES: TechniqueName[] = ["tcp-nutss", "tcp-syni"];

/** One cell: successes out of attempts and the median time of the successes. */
interface Cell {
  ok: number;
  attempts: number;
  medianMs: number | null;
  error: string;
}

async function measure(
  natA: NatProfile,
  natB: NatProfile,
  technique: TechniqueName,
  attempts: number,
): Promise<Cell> {
  const times: number[] = [];
  let error = "";
  await withLab(natA, natB, ["--attempt-timeout", "4"], async (lab, a, b) => {
    for (let n = 0; n < attempts; n++) {
      const started = performance.now();
      try {
        const o = await punch(a, b, lab, technique, n);
        times.push(performance.now() - started);
        o.a.close();
        o.b.close();
      } catch (e) {
        error = (e as Error).message.split("\n")[0] ?? "";
      }
    }
  });
  times.sort((x, y) => x - y);
  const median = times.length === 0 ? null : Math.round(times[Math.floor(times.length / 2)] ?? 0);
  return { ok: times.length, attempts, medianMs: median, error };
}

if (import.meta.main) {
  const attempts = Number(Deno.args[0] ?? "3");
  const out = (line: string) => Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
  out(
    `| NAT A (initiator) | NAT B (responder) | ${TECHNIQUES.map((t) => `\`${t}\``).join(" | ")} |`,
  );
  out(`| --- | --- | ${TECHNIQUES.map(() => "---").join(" | ")} |`);
  for (const [natA, natB] of PAIRS) {
    const cells: string[] = [];
    for (const technique of TECHNIQUES) {
      const c = await measure(natA, natB, technique, attempts);
      cells.push(
        c.ok === 0
          ? `0/${c.attempts} (${c.error.replace(/^punchd refused \S+: /, "")})`
          : `${c.ok}/${c.attempts}, median ${c.medianMs} ms`,
      );
    }
    out(`| ${natA} | ${natB} | ${cells.join(" | ")} |`);
  }
}
