/**
 * Renders a traversal grid run as Markdown and as one self-contained HTML
 * page (inline CSS, no script, no external resource). Pure: text in, text out.
 *
 * @module
 */

import type { Cell, Grid } from "./grid.ts";

/** How a measured cell compares with its expectation. */
export type Verdict = "as-expected" | "missed" | "surprise" | "unsure" | "failed" | "unknown";

/** The verdict of a cell at the grid's threshold. */
export function verdict(cell: Cell, threshold: number): Verdict {
  if (cell.unsupported) return "unknown";
  const rate = cell.attempts === 0 ? 0 : cell.ok / cell.attempts;
  if (cell.expected === "ok") return rate >= threshold ? "as-expected" : "missed";
  if (cell.expected === "fail") return cell.ok > 0 ? "surprise" : "failed";
  return "unsure";
}

const MARK: Record<Verdict, string> = {
  "as-expected": "✅",
  missed: "❌",
  surprise: "❗",
  unsure: "❔",
  failed: "➖",
  unknown: "·",
};

const LEGEND: Record<Verdict, string> = {
  "as-expected": "expected to connect, and did",
  missed: "expected to connect, did not (the grid fails)",
  surprise: "expected to fail, connected (the reasoning is wrong somewhere)",
  unsure: "the behaviours do not decide it",
  failed: "expected to fail, and did",
  unknown: "the daemon does not know this technique",
};

function summary(cell: Cell): string {
  if (cell.unsupported) return "unknown";
  const time = cell.medianMs === null ? "" : ` · ${cell.medianMs} ms`;
  const relayed = cell.winners["relay"];
  return `${cell.ok}/${cell.attempts}${time}${
    relayed === undefined ? "" : ` · relayed ${relayed}`
  }`;
}

/** The most frequent failure reason, with the median time to that failure. */
function mainError(cell: Cell): string {
  const sorted = Object.entries(cell.errors).sort((x, y) => y[1] - x[1]);
  const times = [...(cell.failTimes ?? [])].sort((x, y) => x - y);
  const at = times[Math.floor(times.length / 2)];
  return (sorted[0]?.[0] ?? "") + (at === undefined ? "" : ` (after ${at} ms)`);
}

function winners(cell: Cell): string {
  return Object.entries(cell.winners).map(([t, n]) => `${t} ${n}`).join(", ");
}

function byPair(grid: Grid): Map<string, Map<string, Cell>> {
  const rows = new Map<string, Map<string, Cell>>();
  for (const cell of grid.cells) {
    const row = rows.get(cell.pair) ?? new Map<string, Cell>();
    row.set(cell.technique, cell);
    rows.set(cell.pair, row);
  }
  return rows;
}

/** The grid as Markdown: one row per pair, a cell per technique, then the failures. */
export function renderMarkdown(grid: Grid): string {
  const lines = [
    `Traversal grid, ${grid.started}: ${grid.attempts} attempt(s) per cell, attempt timeout ` +
    `${grid.timeoutS} s, threshold ${grid.threshold * 100}%, ${grid.durationS} s in all. ` +
    (grid.relay === true
      ? "Both daemons had a TURN server (coturn, `--relay`): `relayed N` counts attempts that " +
        "ended relayed, apart from direct ones. "
      : "") +
    `Cells: successes/attempts · median ms; ` +
    (Object.keys(MARK) as Verdict[]).map((v) => `${MARK[v]} ${LEGEND[v]}`).join("; ") + ".",
    "",
    `| A (initiator) : B (responder) | ${grid.techniques.map((t) => `\`${t}\``).join(" | ")} |`,
    `| --- | ${grid.techniques.map(() => "---").join(" | ")} |`,
  ];
  for (const [pair, row] of byPair(grid)) {
    const cells = grid.techniques.map((t) => {
      const cell = row.get(t);
      return cell === undefined ? "" : `${MARK[verdict(cell, grid.threshold)]} ${summary(cell)}`;
    });
    lines.push(`| ${pair} | ${cells.join(" | ")} |`);
  }
  lines.push("");
  if (grid.problems.length === 0) lines.push("Every check passed.");
  else {
    lines.push("Failed checks:", "");
    for (const p of grid.problems) lines.push(`- ${p.replaceAll("|", "\\|")}`);
  }
  const surprises = grid.cells.filter((c) => verdict(c, grid.threshold) === "surprise");
  if (surprises.length > 0) {
    lines.push("", "Expected to fail but connected:", "");
    for (const c of surprises) {
      lines.push(`- ${c.pair} \`${c.technique}\`: ${c.ok}/${c.attempts} (expected: ${c.reason})`);
    }
  }
  return lines.join("\n") + "\n";
}

function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

const CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d232a; background: #fafbfc; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.meta { color: #56606b; margin: 0 0 16px; }
table { border-collapse: separate; border-spacing: 3px; }
th { position: sticky; top: 0; background: #fafbfc; font-weight: 600; padding: 6px; text-align: left; }
th.pair { white-space: nowrap; }
td { vertical-align: top; border-radius: 6px; padding: 6px 8px; min-width: 120px; max-width: 190px; }
td.pair { background: none; font-weight: 600; white-space: nowrap; min-width: 0; }
.rate { font-weight: 600; font-size: 15px; }
.exp { font-size: 11px; color: #3b444d; margin-top: 3px; }
.err { font-size: 11px; color: #7a2e2e; margin-top: 2px; }
.as-expected { background: #c9ecd0; }
.missed { background: #f6b9b5; outline: 2px solid #c0392b; }
.surprise { background: #bcd8f5; }
.unsure { background: #f8e3a8; }
.failed { background: #e4e6e9; color: #56606b; }
.unknown { background: #f1f2f4; color: #9aa3ad; }
td.relayed { outline: 3px dashed #6a3d9a; outline-offset: -4px; }
ul.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 8px; }
ul.legend li { padding: 3px 8px; border-radius: 6px; }
.problems li { color: #a02b22; }
`;

/** The grid as one self-contained HTML page. */
export function renderHtml(grid: Grid): string {
  const rows: string[] = [];
  for (const [pair, row] of byPair(grid)) {
    const tds = grid.techniques.map((t) => {
      const cell = row.get(t);
      if (cell === undefined) return "<td></td>";
      const v = verdict(cell, grid.threshold);
      const error = cell.ok < cell.attempts ? mainError(cell) : "";
      const won = winners(cell);
      const relayed = cell.winners["relay"] !== undefined ? " relayed" : "";
      return `<td class="${v}${relayed}" title="${escape(LEGEND[v])}">` +
        `<div class="rate">${escape(summary(cell))}</div>` +
        `<div class="exp">expected ${cell.expected}: ${escape(cell.reason)}</div>` +
        (won === "" ? "" : `<div class="exp">won by ${escape(won)}</div>`) +
        (error === "" ? "" : `<div class="err">${escape(error)}</div>`) +
        "</td>";
    });
    rows.push(`<tr><td class="pair">${escape(pair)}</td>${tds.join("")}</tr>`);
  }
  const problems = grid.problems.length === 0
    ? "<p>Every check passed.</p>"
    : `<h2>Failed checks</h2><ul class="problems">${
      grid.problems.map((p) => `<li>${escape(p)}</li>`).join("")
    }</ul>`;
  const legend = (Object.keys(LEGEND) as Verdict[])
    .map((v) => `<li class="${v}">${escape(LEGEND[v])}</li>`).join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>punchd traversal grid</title>
<style>${CSS}</style></head><body>
<h1>punchd traversal grid</h1>
<p class="meta">${
    escape(grid.started)
  } · ${grid.attempts} attempt(s) per cell · attempt timeout ${grid.timeoutS} s · threshold ${
    grid.threshold * 100
  }% · ${grid.durationS} s in all · rows: NAT of A (initiator) : NAT of B (responder), /6 = IPv6 · cells: successes/attempts · median time of the successes</p>
<ul class="legend">${legend}</ul>
${problems}
<table><thead><tr><th class="pair">A : B</th>${
    grid.techniques.map((t) => `<th>${escape(t)}</th>`).join("")
  }</tr></thead>
<tbody>
${rows.join("\n")}
</tbody></table>
</body></html>
`;
}
