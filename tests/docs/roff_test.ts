import { assertEquals } from "../assert.ts";
import {
  bold,
  escapeText,
  helpProse,
  macroArgument,
  preformatted,
  synopsisWords,
  textLine,
} from "../../src/docs/roff.ts";

Deno.test("a hyphen becomes \\- (a minus that copies as ASCII -)", () => {
  assertEquals(escapeText("--max-peers 1-10"), "\\-\\-max\\-peers 1\\-10");
});

Deno.test("a backslash becomes \\e, so \\n in text cannot start an escape", () => {
  assertEquals(escapeText("followed by `\\n`"), "followed by `\\en`");
  assertEquals(escapeText("\\fBx"), "\\efBx");
});

Deno.test("a text line that starts with a dot or an apostrophe gets \\& in front", () => {
  assertEquals(textLine(escapeText(".SH not a request")), "\\&.SH not a request");
  assertEquals(textLine(escapeText("'br not a request")), "\\&'br not a request");
  assertEquals(textLine(escapeText("... by one user")), "\\&... by one user");
  assertEquals(textLine(escapeText("a. b")), "a. b");
});

Deno.test("preformatted lines are escaped and protected one by one", () => {
  assertEquals(preformatted(["a-b", ".x", "", "c\\d"]), [
    ".RS 4",
    ".nf",
    "a\\-b",
    "\\&.x",
    "",
    "c\\ed",
    ".fi",
    ".RE",
  ]);
});

Deno.test("characters outside ASCII become \\[uXXXX] and control characters go", () => {
  assertEquals(escapeText("5f0c\u2026e653 \u2192 x"), "5f0c\\[u2026]e653 \\[u2192] x");
  assertEquals(escapeText("a\x01b\x7fc"), "abc");
  assertEquals(escapeText("\u{1F600}"), "\\[u1F600]");
});

Deno.test("a macro argument is quoted, with \\(dq for a double quote", () => {
  assertEquals(macroArgument('say "hi"-now'), '"say \\(dqhi\\(dq\\-now"');
});

Deno.test("synopsis words: options and literals bold, placeholders italic, [options] italic", () => {
  assertEquals(
    synopsisWords("--nutss-ttl N|auto"),
    "\\fB\\-\\-nutss\\-ttl\\fR \\fIN\\fR|\\fBauto\\fR",
  );
  assertEquals(synopsisWords("-h, --help"), "\\fB\\-h\\fR, \\fB\\-\\-help\\fR");
  assertEquals(
    synopsisWords("status [--json] [session options]"),
    "\\fBstatus\\fR [\\fB\\-\\-json\\fR] [\\fIsession options\\fR]",
  );
  assertEquals(synopsisWords("IP:PORT"), "\\fIIP\\fR:\\fIPORT\\fR");
});

Deno.test("help prose sets the options it names in bold, not hyphenated words or ranges", () => {
  assertEquals(
    helpProse("the same as --stun; --stun/--probe, non-root, 1-600"),
    `the same as ${bold("--stun")}; ${bold("--stun")}/${bold("--probe")}, non\\-root, 1\\-600`,
  );
});
