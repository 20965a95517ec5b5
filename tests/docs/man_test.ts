/**
 * The man pages as `make man` builds them: they render without warnings,
 * every option of every `--help` is an entry of its page with the same text,
 * the protocol page names every request, reply and technique of the codec,
 * and the generator's help texts are what the programs print.
 *
 * @module
 */

import { assert, assertEquals, assertThrows } from "../assert.ts";
import { hasCommand, note, skipUnless } from "../helpers/skip.ts";
import {
  buildPages,
  CONFIG_PATH,
  DAEMON_NOTES,
  type ManPage,
  type ManSources,
  readSources,
} from "../../src/docs/man.ts";
import { AUTO_TECHNIQUES, type Reply, type Request, TECHNIQUES } from "../../src/control/codec.ts";
import { DEFAULT_SOCKET_PATH } from "../../src/control/connection.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const GENERATOR = `${ROOT}src/docs/man.ts`;
const DATE = "2026-01-02";

/**
 * Every request and reply kind of the codec. Typed as records over the
 * codec's unions, so adding a kind to the codec breaks `deno check` here
 * until this list, and with it the page's check, names it.
 */
const REQUEST_KINDS: Record<Request["type"], true> = {
  initiate: true,
  respond: true,
  peer: true,
  cancel: true,
  endpoint: true,
  status: true,
  report: true,
};
const REPLY_KINDS: Record<Reply["type"], true> = {
  progress: true,
  ok: true,
  endpoint: true,
  error: true,
  status: true,
  report: true,
};

async function run(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string; err: string }> {
  const { code, stdout, stderr } = await new Deno.Command(command, {
    args,
    env: { DENO_NO_UPDATE_CHECK: "1", ...env },
    stdin: "null",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code, out: text(stdout), err: text(stderr) };
}

/** The generator exactly as the Makefile runs it. */
function generate(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return run(Deno.execPath(), [
    "run",
    "--allow-read",
    "--allow-write",
    "--allow-run",
    GENERATOR,
    ...args,
  ]);
}

let cached: Promise<{ sources: ManSources; pages: ManPage[] }> | undefined;
function built(): Promise<{ sources: ManSources; pages: ManPage[] }> {
  cached ??= readSources(DATE).then((sources) => ({ sources, pages: buildPages(sources) }));
  return cached;
}

function page(pages: readonly ManPage[], file: string): string {
  const found = pages.find((p) => p.file === file);
  if (found === undefined) throw new Error(`no page ${file}`);
  return found.text;
}

/** Roff text as a reader sees it: fonts, `\&` and escapes gone. */
function plain(roff: string): string {
  return roff
    .replace(/\\f[BIRP]/g, "")
    .replaceAll("\\&", "")
    .replaceAll("\\-", "-")
    .replaceAll("\\(dq", '"')
    .replace(/\\\[u([0-9A-F]{4,6})\]/g, (_, hex) => String.fromCodePoint(parseInt(hex, 16)))
    .replaceAll("\\e", "\\");
}

/** The `.TP` entries of a page whose tag is an option: tag and text, as read. */
function optionEntries(roff: string): string[] {
  const lines = roff.split("\n");
  const entries: string[] = [];
  lines.forEach((line, i) => {
    if (line !== ".TP") return;
    const tag = plain(lines[i + 1] ?? "");
    if (!tag.startsWith("-")) return;
    const body: string[] = [];
    for (let j = i + 2; j < lines.length && !(lines[j] ?? ".").startsWith("."); j++) {
      body.push(plain(lines[j] ?? ""));
    }
    entries.push([tag, ...body].join(" ").replace(/\s+/g, " ").trim());
  });
  return entries;
}

/**
 * The option entries of a help text, read without the generator's parser:
 * a line indented by two spaces and starting with `-`, plus the lines
 * indented further below it.
 */
function helpOptionEntries(help: string): string[] {
  const entries: string[][] = [];
  let current: string[] | null = null;
  for (const line of help.split("\n")) {
    if (/^ {2}-/.test(line)) {
      current = [line.trim()];
      entries.push(current);
    } else if (current !== null && /^ {3,}\S/.test(line)) {
      current.push(line.trim());
    } else {
      current = null;
    }
  }
  return entries.map((e) => e.join(" ").replace(/\s+/g, " "));
}

/** The help texts and the files of their pages. */
function helps(sources: ManSources): [string, string, string][] {
  const list: [string, string, string][] = [
    ["punchd", sources.punchdHelp, "punchd.8"],
    ["punchd-rendezvous", sources.rendezvousHelp, "punchd-rendezvous.8"],
  ];
  if (sources.punchctlHelp !== null) list.push(["punchctl", sources.punchctlHelp, "punchctl.1"]);
  else note("NOTE: punchctl has no HELP export yet: its page is not checked");
  return list;
}

Deno.test("the generator as make man runs it writes every page, and --check accepts them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-man-" });
  try {
    const out = await generate(["--out", dir, "--date", DATE]);
    assertEquals(out.code, 0, out.err);
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    const { sources } = await built();
    const expected = ["punchd-rendezvous.8", "punchd.7", "punchd.8"];
    if (sources.punchctlHelp !== null) expected.push("punchctl.1");
    assertEquals(files, expected.sort());
    const check = await generate(["--check", dir, "--date", DATE]);
    assertEquals(check.code, 0, check.err);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--check fails and names a page that is out of date or missing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-man-" });
  try {
    assertEquals((await generate(["--out", dir, "--date", DATE])).code, 0);
    await Deno.writeTextFile(`${dir}/punchd.8`, "stale\n");
    await Deno.remove(`${dir}/punchd.7`);
    const check = await generate(["--check", dir, "--date", DATE]);
    assertEquals(check.code, 1);
    assert(check.err.includes(`${dir}/punchd.8 is out of date`), check.err);
    assert(check.err.includes(`${dir}/punchd.7 is missing`), check.err);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the generator refuses a bad command line with exit code 2", async () => {
  assertEquals((await generate([])).code, 2);
  assertEquals((await generate(["--out", "/tmp/x", "--check", "/tmp/x"])).code, 2);
  assertEquals((await generate(["--out", "/tmp/x", "--date", "today"])).code, 2);
});

const GROFF = hasCommand("groff");
const MAN = hasCommand("man");
const LEXGROG = hasCommand("lexgrog");

Deno.test({
  name: "every page renders with groff -man -ww without a warning",
  ignore: skipUnless(GROFF, "groff", "groff is not installed (Debian: groff-base)"),
  fn: async () => {
    const { pages } = await built();
    const dir = await Deno.makeTempDir({ prefix: "punchd-man-" });
    try {
      for (const p of pages) {
        await Deno.writeTextFile(`${dir}/${p.file}`, p.text);
        const { code, err } = await run("groff", ["-man", "-ww", "-z", `${dir}/${p.file}`]);
        assertEquals([p.file, code, err], [p.file, 0, ""]);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "every page renders with man --warnings without a warning",
  ignore: skipUnless(MAN, "man", "man is not installed (Debian: man-db)"),
  fn: async () => {
    const { pages } = await built();
    const dir = await Deno.makeTempDir({ prefix: "punchd-man-" });
    try {
      for (const p of pages) {
        await Deno.writeTextFile(`${dir}/${p.file}`, p.text);
        const { code, out, err } = await run("man", ["--warnings", "-l", `${dir}/${p.file}`], {
          MANPAGER: "cat",
          MANWIDTH: "80",
          LC_ALL: "C.UTF-8",
        });
        assertEquals([p.file, code, err], [p.file, 0, ""]);
        assert(out.includes("NAME"), `${p.file} rendered empty`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "whatis reads each page's NAME line (lexgrog, as mandb and apropos do)",
  ignore: skipUnless(LEXGROG, "lexgrog", "man-db is not installed (Debian: man-db)"),
  fn: async () => {
    const { pages } = await built();
    const dir = await Deno.makeTempDir({ prefix: "punchd-man-" });
    try {
      for (const p of pages) {
        await Deno.writeTextFile(`${dir}/${p.file}`, p.text);
        const { code, out } = await run("lexgrog", [`${dir}/${p.file}`]);
        const name = p.file.replace(/\.\d$/, "");
        assertEquals(code, 0, p.file);
        assert(out.startsWith(`${dir}/${p.file}: "${name} - `), out);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("every option of each --help is an entry of its page, with the same text", async () => {
  const { sources, pages } = await built();
  for (const [command, help, file] of helps(sources)) {
    const expected = helpOptionEntries(help);
    assert(expected.length > 3, `${command}: no options found in its help`);
    assertEquals(optionEntries(page(pages, file)), expected);
  }
});

Deno.test("the help texts the pages are built from are what the programs print", async () => {
  const { sources } = await built();
  const programs: [string, string | null][] = [
    ["src/daemon/main.ts", sources.punchdHelp],
    ["src/rendezvous/main.ts", sources.rendezvousHelp],
    ["src/ctl/main.ts", sources.punchctlHelp],
  ];
  for (const [main, help] of programs) {
    if (help === null) continue;
    const { code, out } = await run(Deno.execPath(), ["run", "--allow-all", ROOT + main, "--help"]);
    assertEquals([main, code, out.trimEnd()], [main, 0, help.trimEnd()]);
  }
});

Deno.test("the protocol page names every request, reply and technique of the codec", async () => {
  const { sources, pages } = await built();
  const text = plain(page(pages, "punchd.7"));
  for (const kind of Object.keys(REQUEST_KINDS)) {
    assert(text.includes(`\n${kind}|ID`), `punchd(7) does not show the request ${kind}|ID`);
  }
  for (const kind of Object.keys(REPLY_KINDS)) {
    assert(text.includes(`\n${kind}|ID`), `punchd(7) does not show the reply ${kind}|ID`);
  }
  for (const name of [...TECHNIQUES, "auto", "auto-udp"]) {
    assert(text.includes(name), `punchd(7) does not name the technique ${name}`);
  }
  const expansions: [string, readonly string[]][] = [
    ["auto", AUTO_TECHNIQUES.tcp],
    ["auto-udp", AUTO_TECHNIQUES.udp],
  ];
  for (const [name, list] of expansions) {
    const expansion = `${name} means ${list.join(",")}`;
    assert(text.includes(expansion), `punchd(7) does not say "${expansion}"`);
  }
  // The README's tables should name them too; the page's SYNOPSIS (the codec's doc) does.
  const readme = sources.readme;
  const missing = [...Object.keys(REQUEST_KINDS), ...Object.keys(REPLY_KINDS)]
    .filter((kind) => !readme.includes(`\`${kind}\\|ID`));
  if (missing.length > 0) {
    note(`NOTE: README's API tables do not show ${[...new Set(missing)].join(", ")}`);
  }
});

Deno.test("FILES names the socket, and the configuration file when --help has --config", async () => {
  const { sources, pages } = await built();
  for (const file of ["punchd.8", "punchd.7"]) {
    assert(plain(page(pages, file)).includes(DEFAULT_SOCKET_PATH), file);
  }
  const daemon = plain(page(pages, "punchd.8"));
  assertEquals(daemon.includes(CONFIG_PATH), sources.punchdHelp.includes("--config"));
  const without = buildPages({
    ...sources,
    punchdHelp: sources.punchdHelp.replace(/\n {2}--config .*/, ""),
  });
  assert(!plain(page(without, "punchd.8")).includes(CONFIG_PATH));
});

Deno.test("without punchctl's help its page is skipped and no page refers to it", async () => {
  const { sources } = await built();
  const pages = buildPages({ ...sources, punchctlHelp: null });
  assertEquals(pages.map((p) => p.file), ["punchd.8", "punchd-rendezvous.8", "punchd.7"]);
  for (const p of pages) assert(!p.text.includes("\\fBpunchctl\\fR(1)"), p.file);
});

Deno.test("a README section the pages need that is gone stops the build, naming it", async () => {
  const { sources } = await built();
  const readme = sources.readme.replace("\n### Replies\n", "\n### Answers\n");
  assertThrows(() => buildPages({ ...sources, readme }), {
    name: "RangeError",
    message: 'Cannot find README section "Replies": 0 headings have this text',
  });
});

Deno.test("punchd(8) has NOTES with each README part on running the daemon", async () => {
  const { pages } = await built();
  const lines = page(pages, "punchd.8").split("\n");
  assert(lines.includes('.SH "NOTES"'));
  for (const lead of DAEMON_NOTES) assert(lines.includes(`.SS "${lead}"`), lead);
});

Deno.test("every page starts with .TH and has NAME, SYNOPSIS and SEE ALSO", async () => {
  const { pages } = await built();
  for (const p of pages) {
    const lines = p.text.split("\n");
    const [name = "", section = ""] = p.file.split(".");
    assert(plain(lines[1] ?? "").startsWith(`.TH "${name.toUpperCase()}" ${section} `), p.file);
    assert(lines[1]?.includes(`"2026\\-01\\-02"`), p.file);
    for (const heading of ["NAME", "SYNOPSIS", "SEE ALSO"]) {
      assert(lines.includes(`.SH "${heading}"`), `${p.file}: no ${heading}`);
    }
  }
});
