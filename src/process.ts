/**
 * Running a helper program (such as `nft`) to completion, with input on
 * stdin and both outputs collected.
 *
 * @module
 */

/** What a finished command returned. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `command` with `args`, writing `input` to its stdin when given. */
export async function runCommand(
  command: string,
  args: string[],
  input?: string,
): Promise<CommandResult> {
  const child = new Deno.Command(command, {
    args,
    // Not the daemon's working directory: one its user cannot enter (a service started from
    // root's home) makes the spawn fail with EACCES.
    cwd: "/",
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(input));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}
