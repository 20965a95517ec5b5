/**
 * The part of Markdown the README uses, as man(7) roff: sections picked by
 * their headings, paragraphs, fenced code blocks, bullet and numbered lists,
 * tables, `code`, **bold** and links.
 *
 * Tables become tagged paragraphs (`.TP`, one per row, the first cell as the
 * tag): wide tables of prose do not fit a terminal's width as a grid, and
 * `.TP` needs no tbl preprocessor.
 *
 * @module
 */

import { escapeText, macroArgument, preformatted, textLine } from "./roff.ts";

/** A heading of a Markdown text: its level (number of `#`) and text. */
interface Heading {
  level: number;
  text: string;
  /** Index of the heading's line. */
  line: number;
}

function headingsOf(lines: readonly string[]): Heading[] {
  const headings: Heading[] = [];
  let fenced = false;
  lines.forEach((line, index) => {
    if (/^\s*```/.test(line)) fenced = !fenced;
    const match = fenced ? null : /^(#{1,6}) +(.*?)\s*$/.exec(line);
    if (match !== null) {
      headings.push({ level: match[1]?.length ?? 0, text: match[2] ?? "", line: index });
    }
  });
  return headings;
}

/**
 * The body of the section under `heading` (its exact text, without `#`):
 * the lines up to the next heading of any level, or with `subsections` up
 * to the next heading of the same or a higher level (deeper headings stay
 * in the body). Throws RangeError when no heading or more than one has
 * this text, so a renamed README section stops the build instead of
 * leaving a page without it.
 */
export function markdownSection(markdown: string, heading: string, subsections = false): string {
  const lines = markdown.split("\n");
  const headings = headingsOf(lines);
  const found = headings.filter((h) => h.text === heading);
  if (found.length !== 1) {
    throw new RangeError(
      `Cannot find README section "${heading}": ${found.length} headings have this text`,
    );
  }
  const start = found[0] as Heading;
  const end = headings.find((h) => h.line > start.line && (!subsections || h.level <= start.level));
  return lines.slice(start.line + 1, end?.line ?? lines.length).join("\n");
}

/**
 * The part of a section's body that starts with the paragraph led by
 * `**LEAD.**` and runs to the next paragraph led by bold text, or to the
 * end, without the lead itself. Throws RangeError when not exactly one
 * paragraph has this lead.
 */
export function markdownPart(body: string, lead: string): string {
  const lines = body.split("\n");
  const starts = (i: number) => i === 0 || (lines[i - 1] ?? "").trim() === "";
  const found = lines.flatMap((line, i) => starts(i) && line.startsWith(`**${lead}.**`) ? [i] : []);
  if (found.length !== 1) {
    throw new RangeError(
      `Cannot find README paragraph "**${lead}.**": ${found.length} paragraphs start with it`,
    );
  }
  const start = found[0] ?? 0;
  let end = start + 1;
  while (end < lines.length && !(starts(end) && (lines[end] ?? "").startsWith("**"))) end++;
  const part = lines.slice(start, end);
  part[0] = (part[0] ?? "").slice(`**${lead}.**`.length).trimStart();
  return part.join("\n");
}

/**
 * Inline Markdown as roff: `code` and **bold** in bold, _emphasis_ in
 * italics, links as their text (with the address when it is absolute),
 * everything else escaped.
 */
export function inlineMarkdown(text: string): string {
  let out = "";
  let bold = false;
  const pattern =
    /(`+)(.+?)\1|\*\*|\[([^\]]+)\]\(([^)\s]+)\)|(?<![\w\\])_([^_\s](?:[^_]*[^_\s])?)_(?!\w)/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    out += escapeText(text.slice(last, match.index));
    last = match.index + match[0].length;
    const [whole, ticks, code, linkText, address, emphasis] = match;
    if (ticks !== undefined) {
      // \fP returns to the font before, so code inside bold stays bold.
      out += `\\fB${escapeText((code ?? "").trim())}\\fP`;
    } else if (emphasis !== undefined) {
      out += `\\fI${escapeText(emphasis)}\\fP`;
    } else if (whole === "**") {
      out += bold ? "\\fR" : "\\fB";
      bold = !bold;
    } else {
      out += inlineMarkdown(linkText ?? "");
      if (!(address ?? "").startsWith("#")) out += ` <${escapeText(address ?? "")}>`;
    }
  }
  out += escapeText(text.slice(last));
  return bold ? out + "\\fR" : out;
}

/** Cells of a table row; `\|` is a `|` inside a cell. */
function cells(row: string): string[] {
  const inner = row.trim().replace(/^\|/, "").replace(/\|$/, "");
  return inner.split(/(?<!\\)\|/).map((c) => c.trim().replaceAll("\\|", "|"));
}

function tableLines(rows: readonly string[]): string[] {
  const [header, separator, ...body] = rows;
  if (header === undefined || separator === undefined || !/^[\s|:-]+$/.test(separator)) {
    throw new SyntaxError(`Cannot convert README table: no header row in "${rows[0] ?? ""}"`);
  }
  const names = cells(header);
  const out: string[] = [];
  for (const row of body) {
    const [tag = "", ...rest] = cells(row);
    out.push(".TP", textLine(inlineMarkdown(tag)));
    if (rest.length === 1) {
      out.push(textLine(inlineMarkdown(rest[0] ?? "")));
      continue;
    }
    rest.forEach((cell, i) => {
      if (i > 0) out.push(".br");
      out.push(textLine(`\\fI${inlineMarkdown(names[i + 1] ?? "")}\\fR: ${inlineMarkdown(cell)}`));
    });
  }
  return out;
}

/**
 * Converts Markdown text (one section's body) to roff lines. Headings inside
 * it become `.SS`; the caller writes the `.SH` of the section.
 */
export function markdownToRoff(markdown: string): string[] {
  const out: string[] = [];
  const lines = markdown.split("\n");
  let i = 0;
  const blank = (line: string | undefined) => line === undefined || line.trim() === "";
  while (i < lines.length) {
    const line = lines[i] ?? "";
    const trimmed = line.trim();
    if (trimmed === "") {
      i++;
    } else if (trimmed.startsWith("```")) {
      const indent = line.length - line.trimStart().length;
      const code: string[] = [];
      for (i++; i < lines.length && !(lines[i] ?? "").trim().startsWith("```"); i++) {
        code.push((lines[i] ?? "").slice(indent).trimEnd());
      }
      i++;
      out.push(".PP", ...preformatted(code));
    } else if (/^#{1,6} /.test(trimmed)) {
      out.push(".SS " + macroArgument(trimmed.replace(/^#+ +/, "").replaceAll("`", "")));
      i++;
    } else if (trimmed.startsWith("|")) {
      const rows: string[] = [];
      for (; i < lines.length && (lines[i] ?? "").trim().startsWith("|"); i++) {
        rows.push(lines[i] ?? "");
      }
      out.push(...tableLines(rows));
    } else if (/^([-*]|\d+\.) /.test(trimmed)) {
      const marker = /^([-*]|\d+\.) /.exec(trimmed)?.[1] ?? "-";
      const item = [trimmed.slice(marker.length + 1)];
      for (i++; !blank(lines[i]) && /^\s{2,}\S/.test(lines[i] ?? ""); i++) {
        item.push((lines[i] ?? "").trim());
      }
      const tag = /^\d/.test(marker) ? macroArgument(marker) : "\\(bu";
      out.push(`.IP ${tag} 4`, textLine(inlineMarkdown(item.join(" "))));
    } else {
      const paragraph: string[] = [];
      for (; !blank(lines[i]) && !isBlockStart(lines[i] ?? ""); i++) {
        paragraph.push((lines[i] ?? "").trim());
      }
      out.push(".PP", textLine(inlineMarkdown(paragraph.join(" "))));
    }
  }
  return out;
}

function isBlockStart(line: string): boolean {
  const trimmed = line.trim();
  return trimmed.startsWith("```") || trimmed.startsWith("|") || /^#{1,6} /.test(trimmed) ||
    /^([-*]|\d+\.) /.test(trimmed);
}

/**
 * The text of a TypeScript module's doc comment (the first `/** ... *\/`
 * that holds `@module`), without the comment's `*` margin and tags.
 */
export function moduleDoc(source: string): string {
  for (const match of source.matchAll(/\/\*\*([\s\S]*?)\*\//g)) {
    const body = match[1] ?? "";
    if (!body.includes("@module")) continue;
    return body.split("\n")
      .map((l) => l.replace(/^\s*\* ?/, ""))
      .filter((l) => !l.startsWith("@"))
      .join("\n")
      .trim();
  }
  throw new SyntaxError("Cannot find the module doc (a /** comment with @module)");
}
