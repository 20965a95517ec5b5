/**
 * Reads a command's `--help` text as a man page's sections, so the page
 * says what `--help` says.
 *
 * The help text's shape (the one every punchd command uses):
 * ```
 * NAME [VERSION]: one line summary            -> NAME
 *
 * Usage: NAME [options]                       -> SYNOPSIS (indented lines: more forms)
 *
 * Paragraphs.                                 -> DESCRIPTION
 *
 * Options:                                    -> OPTIONS (Commands: -> COMMANDS)
 *   --flag ARG     what it does, continued    -> one .TP entry per line indented by two
 *                  on lines indented further
 * Intro of more options (what they share):    -> .SS "Intro of more options" in OPTIONS
 *   --other N      ...
 *
 * Exit codes: 0 stopped cleanly, 1 failure.   -> EXIT STATUS, one .TP entry per code
 * Label: text, continued on more lines.       -> LABEL (another section)
 * ```
 * Blocks are separated by empty lines; a block of entries without an intro
 * line belongs to OPTIONS (or COMMANDS when its terms are not options).
 *
 * @module
 */

import {
  escapeText,
  helpProse,
  macroArgument,
  preformatted,
  synopsisWords,
  textLine,
} from "./roff.ts";

/** One section of a page: its heading and roff lines (without the `.SH`). */
export interface ManSection {
  heading: string;
  lines: string[];
}

/** A term and its description (an option, a command, an exit code). */
export interface HelpEntry {
  term: string;
  description: string;
  /** The entry's first line as written (for lines shown as they are, such as examples). */
  raw: string;
}

/** The help text taken apart. */
export interface ParsedHelp {
  /** The program name of the first line. */
  name: string;
  /** The version on the first line, if any. */
  version: string | null;
  /** The first line's summary, for NAME. */
  summary: string;
  /** Forms of the command line (after `Usage:`). */
  usage: string[];
  /** Sections in the order of the help text (DESCRIPTION, OPTIONS, EXIT STATUS, ...). */
  sections: ManSection[];
}

type Chunk =
  | { kind: "paragraph"; label: string | null; lines: string[] }
  | { kind: "entry"; term: string; lines: string[]; raw: string };

/** `Label: text` at the start of an unindented line. */
const LABEL = /^([A-Z][A-Za-z -]{0,30}):(?: +(.*))?$/;

/** Headings for labels that man-pages(7) names differently. */
const LABEL_HEADINGS: Record<string, string> = {
  "usage": "SYNOPSIS",
  "options": "OPTIONS",
  "commands": "COMMANDS",
  "exit codes": "EXIT STATUS",
  "exit status": "EXIT STATUS",
};

function headingOf(label: string): string {
  return LABEL_HEADINGS[label.toLowerCase()] ?? label.toUpperCase();
}

/**
 * The column where a block's descriptions start: the most common indent of
 * continuation lines and start of descriptions after two spaces.
 */
function descriptionColumn(block: readonly string[]): number | null {
  const counts = new Map<number, number>();
  for (const line of block) {
    const indent = line.length - line.trimStart().length;
    let column = indent > 2 ? indent : null;
    const split = indent === 2 ? /\S\s{2,}(?=\S)/.exec(line) : null;
    if (split !== null) column = split.index + split[0].length;
    if (column !== null) counts.set(column, (counts.get(column) ?? 0) + 1);
  }
  let best: number | null = null;
  for (const [column, count] of counts) {
    if (best === null || count > (counts.get(best) ?? 0)) best = column;
  }
  return best;
}

/**
 * Splits an entry line into term and description: at the first run of two
 * or more spaces, or else at the block's description column when a single
 * space stands just before it (a term as long as the column).
 */
function splitEntry(line: string, column: number | null): { term: string; lines: string[] } {
  const text = line.trim();
  const split = /\s{2,}/.exec(text);
  if (split !== null) {
    return { term: text.slice(0, split.index), lines: [text.slice(split.index + split[0].length)] };
  }
  if (column !== null && line.length > column && line[column - 1] === " " && line[column] !== " ") {
    return { term: line.slice(0, column).trim(), lines: [line.slice(column).trim()] };
  }
  return { term: text, lines: [] };
}

function chunksOf(block: readonly string[]): Chunk[] {
  const chunks: Chunk[] = [];
  const column = descriptionColumn(block);
  let previousIndent = -1;
  let usageIndent: number | null = null;
  for (const line of block) {
    const indent = line.length - line.trimStart().length;
    const text = line.trim();
    const last = chunks.at(-1);
    const label = indent === 0 ? LABEL.exec(line) : null;
    if (label !== null) {
      chunks.push({ kind: "paragraph", label: label[1] ?? "", lines: [label[2] ?? ""] });
    } else if (indent === 0) {
      if (last?.kind === "paragraph" && previousIndent === 0) last.lines.push(text);
      else chunks.push({ kind: "paragraph", label: null, lines: [text] });
    } else if (last?.kind === "paragraph" && isUsage(last.label)) {
      // A form of the command line; indented deeper than the first form: its continuation.
      usageIndent ??= indent;
      if (indent === usageIndent || last.lines.at(-1) === "") last.lines.push(text);
      else last.lines.push(`${last.lines.pop() ?? ""} ${text}`);
    } else if (indent === 2 || last === undefined) {
      chunks.push({ kind: "entry", ...splitEntry(line, column), raw: text });
    } else {
      // Further indented: continues an entry's description, or a paragraph
      // (more forms of Usage).
      last.lines.push(text);
    }
    previousIndent = indent;
  }
  return chunks;
}

function isUsage(label: string | null): boolean {
  return label !== null && headingOf(label) === "SYNOPSIS";
}

function joined(lines: readonly string[]): string {
  return lines.filter((l) => l !== "").join(" ");
}

function entryLines(entries: readonly HelpEntry[]): string[] {
  const out: string[] = [];
  for (const entry of entries) {
    out.push(".TP", textLine(synopsisWords(entry.term)));
    if (entry.description !== "") out.push(textLine(helpProse(entry.description)));
  }
  return out;
}

/** `0 stopped cleanly, 1 failure, 2 bad command line.` as entries, or null. */
function exitCodes(text: string): HelpEntry[] | null {
  const parts = text.replace(/\.$/, "").split(/, (?=\d+ )/);
  const entries: HelpEntry[] = [];
  for (const part of parts) {
    const match = /^(\d+) (.+)$/.exec(part);
    if (match === null) return null;
    entries.push({ term: match[1] ?? "", description: match[2] ?? "", raw: part });
  }
  return entries;
}

/**
 * The intro line of a block of options as a subsection: `Heading (what they
 * share):` gives `.SS Heading` and a paragraph; a short `Heading:` only the
 * subsection.
 */
function subsection(intro: string): string[] {
  if (intro.endsWith(":") && intro.length <= 60) {
    return [".SS " + macroArgument(intro.slice(0, -1))];
  }
  const match = /^([^()]+?) \((.*)\):$/s.exec(intro);
  if (match !== null) {
    const body = match[2] ?? "";
    const sentence = body.charAt(0).toUpperCase() + body.slice(1) + ".";
    return [".SS " + macroArgument(match[1] ?? ""), textLine(helpProse(sentence))];
  }
  return [".PP", textLine(helpProse(intro))];
}

/** Adds a paragraph (or none) and the entries right after it to the page. */
function addChunk(
  parsed: ParsedHelp,
  section: (heading: string) => string[],
  intro: { label: string | null; lines: string[] } | null,
  entries: readonly HelpEntry[],
): void {
  const text = intro === null ? "" : joined(intro.lines);
  const heading = intro === null || intro.label === null ? null : headingOf(intro.label);
  if (heading === "SYNOPSIS") {
    parsed.usage.push(...(intro?.lines ?? []).filter((l) => l !== ""));
    if (entries.length > 0) section("OPTIONS").push(...entryLines(entries));
    return;
  }
  const verbatim = heading === "EXAMPLES" || entries.every((e) => e.description === "");
  if (entries.length > 0 && heading !== null && verbatim) {
    // Examples, and lines without descriptions: shown as they are.
    const lines = section(heading);
    if (text !== "") lines.push(".PP", textLine(helpProse(text)));
    lines.push(".PP", ...preformatted(entries.map((e) => e.raw)));
    return;
  }
  if (entries.length > 0) {
    const options = entries.every((e) => e.term.startsWith("-"));
    const lines = section(heading ?? (options ? "OPTIONS" : "COMMANDS"));
    if (intro !== null && heading === null) lines.push(...subsection(text));
    else if (text !== "") lines.push(".PP", textLine(helpProse(text)));
    lines.push(...entryLines(entries));
    return;
  }
  if (heading === "EXIT STATUS") {
    const codes = exitCodes(text);
    if (codes !== null) {
      section(heading).push(...entryLines(codes));
      return;
    }
  }
  const lines = section(heading ?? "DESCRIPTION");
  if (lines.length > 0) lines.push(".PP");
  lines.push(textLine(helpProse(text)));
}

/**
 * Parses a help text (see the module doc for its shape). Throws SyntaxError
 * when the first line is not `NAME [VERSION]: summary`.
 */
export function parseHelp(help: string): ParsedHelp {
  const blocks: string[][] = [[]];
  for (const line of help.split("\n")) {
    if (line.trim() === "") blocks.push([]);
    else blocks.at(-1)?.push(line.trimEnd());
  }
  const nonEmpty = blocks.filter((b) => b.length > 0);
  const title = /^(\S+?)(?: (\S+))?: (.+)$/.exec(nonEmpty[0]?.[0] ?? "");
  if (title === null || (nonEmpty[0]?.length ?? 0) !== 1) {
    throw new SyntaxError(`Cannot parse help: first line is not "NAME [VERSION]: summary"`);
  }
  const parsed: ParsedHelp = {
    name: title[1] ?? "",
    version: title[2] ?? null,
    summary: title[3] ?? "",
    usage: [],
    sections: [],
  };
  const section = (heading: string): string[] => {
    let found = parsed.sections.find((s) => s.heading === heading);
    if (found === undefined) {
      found = { heading, lines: [] };
      parsed.sections.push(found);
    }
    return found.lines;
  };
  for (const block of nonEmpty.slice(1)) {
    const chunks = chunksOf(block);
    let i = 0;
    while (i < chunks.length) {
      const head = chunks[i];
      const intro = head?.kind === "paragraph" ? head : null;
      if (intro !== null) i++;
      const entries: HelpEntry[] = [];
      for (let next = chunks[i]; next?.kind === "entry"; next = chunks[++i]) {
        entries.push({ term: next.term, description: joined(next.lines), raw: next.raw });
      }
      addChunk(parsed, section, intro, entries);
    }
  }
  return parsed;
}

/** The SYNOPSIS lines: each usage form, the program name set to `command`. */
export function synopsisLines(usage: readonly string[], command: string): string[] {
  const out: string[] = [];
  for (const form of usage) {
    if (out.length > 0) out.push(".br");
    const rest = form.replace(/^\S+\s*/, "");
    out.push(textLine(`${synopsisWords(command)}${rest === "" ? "" : " " + synopsisWords(rest)}`));
  }
  return out;
}

/** The NAME line: `name \- summary`. */
export function nameLine(name: string, summary: string): string {
  return textLine(`${escapeText(name)} \\- ${escapeText(summary)}`);
}
