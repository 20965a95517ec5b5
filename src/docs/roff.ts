/**
 * Roff text for man(7) pages: escaping of plain text, font changes, and the
 * few macros the page generator uses (.TH, .SH, .SS, .PP, .TP, .IP, .nf/.fi).
 *
 * Everything that is not a macro goes through {@link escapeText}, so no
 * source text can start a request or change fonts by accident.
 *
 * @module
 */

/**
 * Escapes plain text for use inside a roff line: backslash becomes `\e`,
 * every `-` becomes `\-` (a minus sign that copies as ASCII `-`), and
 * characters outside printable ASCII become `\[uXXXX]` (groff and mandoc
 * both read them, and the page stays ASCII whatever the locale).
 */
export function escapeText(text: string): string {
  let out = "";
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    if (char === "\\") out += "\\e";
    else if (char === "-") out += "\\-";
    else if (char === "\t") out += " ";
    else if (code < 0x20 || code === 0x7f) out += "";
    else if (code > 0x7e) out += `\\[u${code.toString(16).toUpperCase().padStart(4, "0")}]`;
    else out += char;
  }
  return out;
}

/**
 * Makes an escaped line safe as a text line: one that starts with `.` or `'`
 * would be read as a request, so it gets the zero-width `\&` in front.
 */
export function textLine(escaped: string): string {
  return /^[.']/.test(escaped) ? `\\&${escaped}` : escaped;
}

/** `text` escaped and in bold. */
export function bold(text: string): string {
  return `\\fB${escapeText(text)}\\fR`;
}

/** `text` escaped and in italics. */
export function italic(text: string): string {
  return `\\fI${escapeText(text)}\\fR`;
}

/**
 * One argument of a macro line (`.TH`, `.SH`, ...), escaped and double
 * quoted; a `"` inside becomes `\(dq`.
 */
export function macroArgument(text: string): string {
  return `"${escapeText(text).replaceAll('"', "\\(dq")}"`;
}

/**
 * A macro line: `.NAME` followed by its arguments (already formatted with
 * {@link macroArgument} or plain words).
 */
export function macro(name: string, ...args: string[]): string {
  return [`.${name}`, ...args].join(" ");
}

/**
 * Lines of preformatted text (`.nf` ... `.fi`, indented by `.RS`/`.RE`),
 * each escaped, so a code block keeps its layout.
 */
export function preformatted(lines: readonly string[]): string[] {
  const out = [".RS 4", ".nf"];
  for (const line of lines) out.push(line === "" ? "" : textLine(escapeText(line)));
  out.push(".fi", ".RE");
  return out;
}

/**
 * Formats a command line fragment such as `--tcp-keepalive IDLE,INTERVAL|off`
 * or `status [--json]`: options and literal words in bold, placeholders (upper
 * case words) in italics, punctuation plain.
 */
export function synopsisWords(text: string): string {
  let out = "";
  const pattern =
    /(\[[a-z][a-z ]*\])|(-{1,2}[A-Za-z0-9][\w-]*)|([A-Z][A-Z0-9_]*)|([a-z][\w.-]*)|(.)/gs;
  for (const match of text.matchAll(pattern)) {
    const [whole, words, option, placeholder, word] = match;
    // [options], [session options]: placeholders for more options.
    if (words !== undefined) out += `[${italic(words.slice(1, -1))}]`;
    else if (option !== undefined || word !== undefined) out += bold(whole);
    else if (placeholder !== undefined) out += italic(whole);
    else out += escapeText(whole);
  }
  return out;
}

/**
 * Escapes help text, setting the options it mentions (`--turn`, `-h`) in
 * bold; everything else stays plain.
 */
export function helpProse(text: string): string {
  let out = "";
  let last = 0;
  for (const match of text.matchAll(/(?<=^|[\s(\[,;/])--?[a-z][a-z0-9-]*(?![\w-])/g)) {
    out += escapeText(text.slice(last, match.index)) + bold(match[0]);
    last = match.index + match[0].length;
  }
  return out + escapeText(text.slice(last));
}
