import { assertEquals, assertThrows } from "../assert.ts";
import { parseHelp } from "../../src/docs/help.ts";

const HELP = `tool 1.2.3: does things

Usage: tool [options]

Tool does things to other things,
in order.

Options:
  --alpha N        the first, 1-9
                   (default 1)
  --a-long-flags N the second
  --third-flag-long-name  the third
  --keepalive IDLE,COUNT|off
                   keepalive
  -h, --help       print this help

Limits against floods (per source address: an IPv4 address, or an IPv6 /64):
  --max-x N        at most N

Exit codes: 0 stopped cleanly, 1 failure, 2 bad command line.
Techniques: a, b (needs X),
c.`;

function section(help: string, heading: string): string[] {
  return parseHelp(help).sections.find((s) => s.heading === heading)?.lines ?? [];
}

Deno.test("the first line gives name, version and summary; Usage the synopsis", () => {
  const parsed = parseHelp(HELP);
  assertEquals(parsed.name, "tool");
  assertEquals(parsed.version, "1.2.3");
  assertEquals(parsed.summary, "does things");
  assertEquals(parsed.usage, ["tool [options]"]);
});

Deno.test("a paragraph becomes DESCRIPTION, its lines joined", () => {
  assertEquals(section(HELP, "DESCRIPTION"), ["Tool does things to other things, in order."]);
});

Deno.test("each option line becomes a .TP entry, continuation lines joined", () => {
  const lines = section(HELP, "OPTIONS");
  assertEquals(lines.slice(0, 3), [
    ".TP",
    "\\fB\\-\\-alpha\\fR \\fIN\\fR",
    "the first, 1\\-9 (default 1)",
  ]);
  assertEquals(lines.filter((l) => l === ".TP").length, 6);
});

Deno.test("a term as wide as the column is split at the column, not swallowing the text", () => {
  const lines = section(HELP, "OPTIONS");
  const at = lines.indexOf("\\fB\\-\\-a\\-long\\-flags\\fR \\fIN\\fR");
  assertEquals(lines[at + 1], "the second");
  const third = lines.indexOf("\\fB\\-\\-third\\-flag\\-long\\-name\\fR");
  assertEquals(lines[third + 1], "the third");
});

Deno.test("an option whose text starts on the next line keeps its whole term", () => {
  const lines = section(HELP, "OPTIONS");
  const at = lines.indexOf(
    "\\fB\\-\\-keepalive\\fR \\fIIDLE\\fR,\\fICOUNT\\fR|\\fBoff\\fR",
  );
  assertEquals(lines[at + 1], "keepalive");
});

Deno.test("an intro with a parenthesis becomes a subsection of OPTIONS and a sentence", () => {
  const lines = section(HELP, "OPTIONS");
  const at = lines.indexOf('.SS "Limits against floods"');
  assertEquals(lines.slice(at + 1, at + 3), [
    "Per source address: an IPv4 address, or an IPv6 /64.",
    ".TP",
  ]);
});

Deno.test("Exit codes become EXIT STATUS entries; another label its own section", () => {
  assertEquals(section(HELP, "EXIT STATUS"), [
    ".TP",
    "0",
    "stopped cleanly",
    ".TP",
    "1",
    "failure",
    ".TP",
    "2",
    "bad command line",
  ]);
  assertEquals(section(HELP, "TECHNIQUES"), ["a, b (needs X), c."]);
});

Deno.test("indented Usage forms are kept apart, deeper lines join the form above", () => {
  const parsed = parseHelp(`cmd: x

Usage:
  cmd a [options]
  cmd b --long
        [options]

Commands:
  a    does a
  b    does b

Examples:
  cmd a  --x
  cmd b`);
  assertEquals(parsed.usage, ["cmd a [options]", "cmd b --long [options]"]);
  const commands = parsed.sections.find((s) => s.heading === "COMMANDS")?.lines ?? [];
  assertEquals(commands, [".TP", "\\fBa\\fR", "does a", ".TP", "\\fBb\\fR", "does b"]);
  const examples = parsed.sections.find((s) => s.heading === "EXAMPLES")?.lines ?? [];
  assertEquals(examples, [".PP", ".RS 4", ".nf", "cmd a  \\-\\-x", "cmd b", ".fi", ".RE"]);
});

Deno.test("a help text without a NAME: summary first line is refused", () => {
  assertThrows(() => parseHelp("no summary here\n\nUsage: x\n"), {
    name: "SyntaxError",
    message: 'Cannot parse help: first line is not "NAME [VERSION]: summary"',
  });
});
