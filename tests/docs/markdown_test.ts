import { assertEquals, assertThrows } from "../assert.ts";
import {
  inlineMarkdown,
  markdownPart,
  markdownSection,
  markdownToRoff,
  moduleDoc,
} from "../../src/docs/markdown.ts";

const README = `# tool

## The API

Intro.

### Requests

Body of requests.

\`\`\`
### not a heading inside code
\`\`\`

### Replies

Replies text.

## Other
`;

Deno.test("a section is picked by its heading and ends at the next heading", () => {
  assertEquals(markdownSection(README, "The API").trim(), "Intro.");
  assertEquals(
    markdownSection(README, "Requests").trim(),
    "Body of requests.\n\n```\n### not a heading inside code\n```",
  );
});

Deno.test("with subsections, a section runs to the next heading of its level", () => {
  const body = markdownSection(README, "The API", true);
  assertEquals(body.includes("### Replies"), true);
  assertEquals(body.includes("## Other"), false);
});

Deno.test("a heading that is missing or not unique stops the build", () => {
  assertThrows(() => markdownSection(README, "Gone"), {
    name: "RangeError",
    message: 'Cannot find README section "Gone": 0 headings have this text',
  });
  assertThrows(() => markdownSection("## A\n## A\n", "A"), {
    name: "RangeError",
    message: 'Cannot find README section "A": 2 headings have this text',
  });
});

Deno.test("inline code and bold become bold, code inside bold returns to bold", () => {
  assertEquals(inlineMarkdown("use `a-b` now"), "use \\fBa\\-b\\fP now");
  assertEquals(
    inlineMarkdown("**`ok` says it** then"),
    "\\fB\\fBok\\fP says it\\fR then",
  );
});

Deno.test("_emphasis_ is italic, but not the underscores of SO_REUSEADDR", () => {
  assertEquals(inlineMarkdown("for _guards_, SO_REUSEADDR"), "for \\fIguards\\fP, SO_REUSEADDR");
});

Deno.test("links keep their text, and an absolute address in angle brackets", () => {
  assertEquals(inlineMarkdown("see [`auto`](#auto-x)"), "see \\fBauto\\fP");
  assertEquals(inlineMarkdown("[RFC](https://x.org/a)"), "RFC <https://x.org/a>");
});

Deno.test("paragraph lines join into one text line; a leading dot is protected", () => {
  assertEquals(markdownToRoff("first\nsecond\n\n... third"), [
    ".PP",
    "first second",
    ".PP",
    "\\&... third",
  ]);
});

Deno.test("a fenced code block becomes preformatted text, escaped", () => {
  assertEquals(markdownToRoff("```sh\nrun --x \\\n.y\n```"), [
    ".PP",
    ".RS 4",
    ".nf",
    "run \\-\\-x \\e",
    "\\&.y",
    ".fi",
    ".RE",
  ]);
});

Deno.test("bullet items with continuation lines become .IP entries", () => {
  assertEquals(markdownToRoff("- one\n  more\n- two"), [
    ".IP \\(bu 4",
    "one more",
    ".IP \\(bu 4",
    "two",
  ]);
});

Deno.test("a two-column table becomes .TP entries, \\| a bar inside a cell", () => {
  const table = "| request | meaning |\n| --- | --- |\n| `cancel\\|ID` | cancel it |";
  assertEquals(markdownToRoff(table), [".TP", "\\fBcancel|ID\\fP", "cancel it"]);
});

Deno.test("a wider table names each further cell by its column", () => {
  const table = "| step | when | `HOW` |\n| - | - | - |\n| a | always | first |";
  assertEquals(markdownToRoff(table), [
    ".TP",
    "a",
    "\\fIwhen\\fR: always",
    ".br",
    "\\fI\\fBHOW\\fP\\fR: first",
  ]);
});

Deno.test("a table without a separator row is refused", () => {
  assertThrows(() => markdownToRoff("| a | b |\n| c | d |"), { name: "SyntaxError" });
});

Deno.test("a part of a section runs from its bold lead to the next bold lead", () => {
  const body = "Intro.\n\n**One.** first\ntext\n\n| a | b |\n\nmore\n\n**Two.** second\n";
  assertEquals(markdownPart(body, "One"), "first\ntext\n\n| a | b |\n\nmore\n");
  assertEquals(markdownPart(body, "Two"), "second\n");
  assertThrows(() => markdownPart(body, "Three"), {
    name: "RangeError",
    message: 'Cannot find README paragraph "**Three.**": 0 paragraphs start with it',
  });
});

Deno.test("a module doc is read without its margin and tags", () => {
  const source =
    "/** Not this. */\n/**\n * The codec.\n * ```\n * a|b\n * ```\n *\n * @module\n */";
  assertEquals(moduleDoc(source), "The codec.\n```\na|b\n```");
});
