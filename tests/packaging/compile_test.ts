/**
 * `make compile` (deno compile), where the machine has Deno's runtime base
 * binary: DENORT_BIN names it. It cannot be had here (neither the npm
 * registry nor Debian ships denort), so on these machines the test is
 * skipped and says why; wherever DENORT_BIN is set, the compiled punchd
 * must print its version and help.
 *
 * @module
 */

import { assertEquals, assertMatch } from "../assert.ts";
import { VERSION } from "../../src/daemon/config.ts";
import { skipUnless } from "../helpers/skip.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const DENORT = Deno.env.get("DENORT_BIN") ?? "";
const NAME = "make compile";

Deno.test({
  name: "make compile: the compiled punchd prints its version and help",
  ignore: skipUnless(DENORT !== "", NAME, "DENORT_BIN names no denort (none can be had here)"),
}, async () => {
  const built = await new Deno.Command("make", {
    args: ["-C", ROOT, "compile"],
    env: { DENORT_BIN: DENORT },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(built.success, true, new TextDecoder().decode(built.stderr));
  const run = (args: string[]) =>
    new Deno.Command(`${ROOT}dist/punchd`, { args, stdout: "piped", stderr: "piped" })
      .output();
  const version = await run(["--version"]);
  assertEquals(new TextDecoder().decode(version.stdout).trim(), `punchd ${VERSION}`);
  const help = await run(["--help"]);
  assertMatch(new TextDecoder().decode(help.stdout), /^Usage: punchd \[options\]$/m);
});
