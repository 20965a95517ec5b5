/**
 * Builds the man pages from the texts they document, so they cannot drift
 * from `--help` and the README:
 *
 * ```
 * deno run --allow-read --allow-write --allow-run src/docs/man.ts --out DIR
 * deno run --allow-read --allow-run src/docs/man.ts --check DIR
 * ```
 *
 * - punchd(8): `HELP` of `src/daemon/config.ts`, and NOTES from the README's
 *   section on running the daemon (the socket, the firewall, ...);
 * - punchd-rendezvous(8): the help of `src/rendezvous/main.ts` and the
 *   README section on the rendezvous server;
 * - punchctl(1): `HELP` of `src/ctl/main.ts` or `src/ctl/command_line.ts`
 *   (skipped with a warning while neither exports it);
 * - punchd(7), the control protocol: the request and reply lines of the
 *   module doc of `src/control/codec.ts` and the README's API sections,
 *   picked by their headings.
 *
 * FILES, SEE ALSO and AUTHORS are written here. `--check DIR` compares
 * DIR's pages with freshly built ones and exits 1 when one differs or is
 * missing. `--date YYYY-MM-DD` sets the date in the page headers (default:
 * the date of the last commit, or none outside a git checkout).
 *
 * Exit codes: 0 done, 1 a source could not be read or a page differs, 2 bad
 * command line.
 *
 * @module
 */

import { parseArgs } from "../cli.ts";
import { HELP as PUNCHD_HELP, VERSION } from "../daemon/config.ts";
import { DEFAULT_SOCKET_PATH } from "../control/connection.ts";
import * as rendezvous from "../rendezvous/main.ts";
import { type ManSection, nameLine, parseHelp, synopsisLines } from "./help.ts";
import { markdownPart, markdownSection, markdownToRoff, moduleDoc } from "./markdown.ts";
import { bold, escapeText, macro, macroArgument, preformatted, textLine } from "./roff.ts";

/** The repository's root directory. */
const ROOT = new URL("../../", import.meta.url);

/** Where the configuration file is looked for (`--config`). */
export const CONFIG_PATH = "/etc/punchd/punchd.toml";
/** The systemd unit the Debian package installs. */
export const UNIT_PATH = "/lib/systemd/system/punchd.service";

/** One generated page. */
export interface ManPage {
  /** File name, e.g. `punchd.8`. */
  file: string;
  /** The roff text. */
  text: string;
}

/** What the pages are built from; tests pass their own. */
export interface ManSources {
  /** The daemon's --help. */
  punchdHelp: string;
  /** The rendezvous server's --help. */
  rendezvousHelp: string;
  /** punchctl's --help, or null while there is none (its page is skipped). */
  punchctlHelp: string | null;
  /** README.md. */
  readme: string;
  /** The source of src/control/codec.ts (for its module doc). */
  codecSource: string;
  /** Date for the page headers (YYYY-MM-DD), or "". */
  date: string;
}

/** The README sections of punchd(7): section heading, README heading (its text, exact). */
export const PROTOCOL_SECTIONS: readonly (readonly [string, string])[] = [
  ["DESCRIPTION", "The punchd API"],
  ["REQUESTS", "Requests"],
  ["REPLIES", "Replies"],
  ["AUTO", "`auto`: one request finds the way"],
  ["ENDPOINT DISCOVERY", "STUN: endpoint discovery and NAT behaviour (RFC 8489, RFC 5780)"],
  ["RELAY", "Relay of last resort: `relay` through TURN (RFC 6062)"],
  ["RECEIVING THE SOCKET", "Receiving the socket"],
  ["EXAMPLES", "A worked exchange (`tcp-direct`)"],
];

/**
 * The README section on running the daemon, and the parts of it (by the bold
 * lead of their first paragraph) that punchd(8) shows under NOTES.
 */
export const DAEMON_SECTION = "Running the daemon";
export const DAEMON_NOTES = [
  "The socket and its directory",
  "One daemon per network namespace",
  "The firewall",
  "Source ports",
  "Clients",
];

/** Where punchctl's help text may be exported, in order. */
export const PUNCHCTL_MODULES = ["src/ctl/main.ts", "src/ctl/command_line.ts"];

/** README section of punchd-rendezvous(8) (its protocol). */
export const RENDEZVOUS_SECTION = "Rendezvous and probe server";

const MANUALS: Record<string, string> = {
  "1": "User Commands",
  "7": "Miscellaneous Information Manual",
  "8": "System Manager's Manual",
};

/** A `.TP` list of files: path and what it is. */
function filesSection(files: readonly (readonly [string, string])[]): ManSection {
  const lines: string[] = [];
  for (const [path, what] of files) {
    lines.push(".TP", textLine(bold(path)), textLine(escapeText(what)));
  }
  return { heading: "FILES", lines };
}

/** SEE ALSO: the other pages of punchd that exist, then `others`. */
function seeAlso(self: string, pages: readonly string[], others: readonly string[]): ManSection {
  const refs = [...pages.filter((p) => p !== self), ...others].map((ref) => {
    const match = /^(.+)\((\d)\)$/.exec(ref);
    return match === null ? escapeText(ref) : `${bold(match[1] ?? "")}(${match[2]})`;
  });
  return { heading: "SEE ALSO", lines: [textLine(refs.join(", "))] };
}

const AUTHORS: ManSection = {
  heading: "AUTHORS",
  lines: [
    "The punchd developers.",
    "This page is generated from the program's \\fB\\-\\-help\\fR and the README of the punchd source tree.",
  ],
};

/** Sections in the order man-pages(7) gives; others go after OPTIONS, in help order. */
const ORDER = ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS"];
const LATE = ["EXIT STATUS"];

function ordered(sections: readonly ManSection[]): ManSection[] {
  const rank = (heading: string) => {
    const early = ORDER.indexOf(heading);
    if (early >= 0) return early;
    const late = LATE.indexOf(heading);
    return late >= 0 ? ORDER.length + 1 + late : ORDER.length;
  };
  return [...sections].sort((a, b) => rank(a.heading) - rank(b.heading));
}

/** A page: the header comment, .TH, then each section under its .SH. */
function render(
  name: string,
  section: string,
  date: string,
  sources: string,
  sections: readonly ManSection[],
): string {
  const lines = [
    `.\\" Generated by src/docs/man.ts from ${sources}; do not edit.`,
    macro(
      "TH",
      macroArgument(name.toUpperCase()),
      section,
      macroArgument(date),
      macroArgument(`punchd ${VERSION}`),
      macroArgument(MANUALS[section] ?? ""),
    ),
    // Left-aligned, no hyphenation: the pages quote many names, paths and lines of the protocol.
    ".ad l",
    ".nh",
  ];
  for (const s of sections) {
    if (s.lines.length === 0) continue;
    lines.push(macro("SH", macroArgument(s.heading)));
    // A section's text starts a paragraph by itself; a leading .PP only warns.
    lines.push(...(s.lines[0] === ".PP" ? s.lines.slice(1) : s.lines));
  }
  return lines.join("\n") + "\n";
}

/** The page of a command from its help text, plus README sections and FILES. */
function commandPage(options: {
  command: string;
  section: string;
  help: string;
  sources: string;
  date: string;
  extra: readonly ManSection[];
  files: readonly (readonly [string, string])[];
  pages: readonly string[];
  seeAlso: readonly string[];
}): string {
  const help = parseHelp(options.help);
  const sections: ManSection[] = [
    { heading: "NAME", lines: [nameLine(options.command, help.summary)] },
    { heading: "SYNOPSIS", lines: synopsisLines(help.usage, options.command) },
    ...help.sections,
  ];
  const tail: ManSection[] = [...options.extra];
  if (options.files.length > 0) tail.push(filesSection(options.files));
  tail.push(seeAlso(`${options.command}(${options.section})`, options.pages, options.seeAlso));
  tail.push(AUTHORS);
  return render(options.command, options.section, options.date, options.sources, [
    ...ordered(sections),
    ...tail,
  ]);
}

/** NOTES of punchd(8): the README's parts on running the daemon, each a subsection. */
function daemonNotes(readme: string): ManSection {
  const body = markdownSection(readme, DAEMON_SECTION);
  const lines: string[] = [];
  for (const lead of DAEMON_NOTES) {
    lines.push(".SS " + macroArgument(lead), ...markdownToRoff(markdownPart(body, lead)));
  }
  return { heading: "NOTES", lines };
}

/** The request and reply lines of the codec's module doc, each under the line that names it. */
function protocolSynopsis(codecSource: string): string[] {
  const lines = moduleDoc(codecSource).split("\n");
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!(lines[i] ?? "").startsWith("```")) continue;
    const intro = (lines[i - 1] ?? "").trim();
    const code: string[] = [];
    for (i++; i < lines.length && !(lines[i] ?? "").startsWith("```"); i++) {
      code.push(lines[i] ?? "");
    }
    if (intro !== "") out.push(".PP", textLine(escapeText(intro)));
    out.push(...preformatted(code));
  }
  if (out.length === 0) {
    throw new SyntaxError("Cannot build punchd(7): the codec's module doc has no code block");
  }
  return out;
}

/** The protocol page, punchd(7). */
function protocolPage(sources: ManSources, pages: readonly string[]): string {
  const sections: ManSection[] = [
    {
      heading: "NAME",
      lines: [nameLine("punchd", "control protocol of the hole punching daemon")],
    },
    { heading: "SYNOPSIS", lines: protocolSynopsis(sources.codecSource) },
  ];
  for (const [heading, readmeHeading] of PROTOCOL_SECTIONS) {
    sections.push({
      heading,
      lines: markdownToRoff(markdownSection(sources.readme, readmeHeading)),
    });
  }
  sections.push(
    filesSection([[DEFAULT_SOCKET_PATH, "the control socket (punchd's --socket)"]]),
    seeAlso("punchd(7)", pages, ["unix(7)", "recvmsg(2)", "cmsg(3)"]),
    AUTHORS,
  );
  return render("punchd", "7", sources.date, "src/control/codec.ts and README.md", sections);
}

/**
 * Builds every page whose source exists. Throws (RangeError, SyntaxError)
 * when a help text or a README section cannot be read as expected.
 */
export function buildPages(sources: ManSources): ManPage[] {
  const pages = ["punchd(8)", "punchd-rendezvous(8)", "punchd(7)"];
  if (sources.punchctlHelp !== null) pages.splice(2, 0, "punchctl(1)");
  const socketFile = [DEFAULT_SOCKET_PATH, "the control socket (--socket)"] as const;
  const daemonFiles: (readonly [string, string])[] = [socketFile];
  if (/--config\b/.test(sources.punchdHelp)) {
    daemonFiles.push([
      CONFIG_PATH,
      "the configuration file, read when it exists (--config): its keys are the long option " +
      "names without --; options on the command line override it",
    ]);
  }
  daemonFiles.push([UNIT_PATH, "the systemd unit of the daemon"]);
  const result: ManPage[] = [{
    file: "punchd.8",
    text: commandPage({
      command: "punchd",
      section: "8",
      help: sources.punchdHelp,
      sources: "src/daemon/config.ts and README.md",
      date: sources.date,
      extra: [daemonNotes(sources.readme)],
      files: daemonFiles,
      pages,
      seeAlso: ["systemd.exec(5)"],
    }),
  }, {
    file: "punchd-rendezvous.8",
    text: commandPage({
      command: "punchd-rendezvous",
      section: "8",
      help: sources.rendezvousHelp,
      sources: "src/rendezvous/main.ts and README.md",
      date: sources.date,
      extra: [{
        heading: "PROTOCOL",
        lines: markdownToRoff(markdownSection(sources.readme, RENDEZVOUS_SECTION, true)),
      }],
      files: [],
      pages,
      seeAlso: [],
    }),
  }];
  if (sources.punchctlHelp !== null) {
    result.push({
      file: "punchctl.1",
      text: commandPage({
        command: "punchctl",
        section: "1",
        help: sources.punchctlHelp,
        sources: "src/ctl/main.ts",
        date: sources.date,
        extra: [],
        files: [socketFile],
        pages,
        seeAlso: [],
      }),
    });
  }
  result.push({ file: "punchd.7", text: protocolPage(sources, pages) });
  return result;
}

/**
 * A module's `HELP` export, or else the `const HELP = \`...\`` in its
 * source when that literal has no substitutions; null when neither exists.
 */
export function helpOf(
  module: Record<string, unknown> | null,
  source: string | null,
): string | null {
  const exported = module?.["HELP"];
  if (typeof exported === "string") return exported;
  const literal = source === null ? null : /\bconst HELP = `([^`]*)`;/.exec(source);
  if (literal === null || (literal[1] ?? "").includes("${")) return null;
  return literal[1] ?? null;
}

function readSource(path: string): string | null {
  try {
    return Deno.readTextFileSync(new URL(path, ROOT));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

function warn(text: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`man: ${text}\n`));
}

/** The date of the last commit (YYYY-MM-DD), or "" when git cannot tell. */
async function commitDate(): Promise<string> {
  try {
    const { success, stdout } = await new Deno.Command("git", {
      args: ["-C", new URL(ROOT).pathname, "log", "-1", "--format=%cs"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const text = new TextDecoder().decode(stdout).trim();
    return success && /^\d{4}-\d{2}-\d{2}$/.test(text) ? text : "";
  } catch {
    return "";
  }
}

/**
 * Reads the sources from this source tree: the help constants by import
 * (punchctl's module by dynamic import, since it may not exist yet) and
 * README.md and codec.ts as text. Warns on stderr about what is missing.
 */
export async function readSources(date?: string): Promise<ManSources> {
  const rendezvousHelp = helpOf(
    rendezvous as Record<string, unknown>,
    readSource("src/rendezvous/main.ts"),
  );
  if (rendezvousHelp === null) {
    throw new SyntaxError("Cannot find the help text of src/rendezvous/main.ts (export HELP)");
  }
  if (!("HELP" in rendezvous)) {
    warn("src/rendezvous/main.ts does not export HELP; its help was read from the source");
  }
  let punchctlHelp: string | null = null;
  for (const path of PUNCHCTL_MODULES) {
    const source = readSource(path);
    if (source === null) continue;
    // Imported by a computed name: the module may not exist yet in this tree.
    const module = await import(new URL(path, ROOT).href) as Record<string, unknown>;
    punchctlHelp ??= helpOf(module, source);
  }
  if (punchctlHelp === null) {
    warn(`no HELP in ${PUNCHCTL_MODULES.join(" or ")}: punchctl.1 skipped`);
  }
  const readme = readSource("README.md");
  const codecSource = readSource("src/control/codec.ts");
  if (readme === null || codecSource === null) {
    throw new Deno.errors.NotFound("Cannot read README.md and src/control/codec.ts");
  }
  return {
    punchdHelp: PUNCHD_HELP,
    rendezvousHelp,
    punchctlHelp,
    readme,
    codecSource,
    date: date ?? await commitDate(),
  };
}

const USAGE = "usage: man.ts (--out DIR | --check DIR) [--date YYYY-MM-DD]";

/** Writes the pages to `--out DIR`, or compares them with `--check DIR`; returns the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: { out: { type: "string" }, check: { type: "string" }, date: { type: "string" } },
    }).values;
  } catch (error) {
    warn(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const dir = values.out ?? values.check;
  if (dir === undefined || (values.out !== undefined && values.check !== undefined)) {
    warn(USAGE);
    return 2;
  }
  if (values.date !== undefined && !/^\d{4}-\d{2}-\d{2}$/.test(values.date)) {
    warn(`--date: "${values.date}" is not YYYY-MM-DD`);
    return 2;
  }
  let pages: ManPage[];
  try {
    pages = buildPages(await readSources(values.date));
  } catch (error) {
    warn((error as Error).message);
    return 1;
  }
  if (values.out !== undefined) {
    Deno.mkdirSync(dir, { recursive: true });
    for (const page of pages) Deno.writeTextFileSync(`${dir}/${page.file}`, page.text);
    return 0;
  }
  let status = 0;
  for (const page of pages) {
    let current: string | null = null;
    try {
      current = Deno.readTextFileSync(`${dir}/${page.file}`);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    if (current !== page.text) {
      warn(`${dir}/${page.file} ${current === null ? "is missing" : "is out of date"}`);
      status = 1;
    }
  }
  return status;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
