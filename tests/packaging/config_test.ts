/**
 * The package's default configuration (src/packaging/punchd.toml, installed
 * as /etc/punchd/punchd.toml): it names every setting punchd has, sets only
 * the socket's group, and every example it shows is one punchd accepts.
 *
 * @module
 */

import { assertEquals } from "../assert.ts";
import { CONFIG_SETTINGS, parseCommandLine } from "../../src/daemon/config.ts";
import { configFileArgs } from "../../src/daemon/config_file.ts";

const FILE = new URL("../../src/packaging/punchd.toml", import.meta.url).pathname;
const TEXT = Deno.readTextFileSync(FILE);

/** Settings the file shows: key -> [commented out, the line without "# "]. */
function settings(): Map<string, [boolean, string]> {
  const found = new Map<string, [boolean, string]>();
  for (const line of TEXT.split("\n")) {
    const match = line.match(/^(# )?([a-z][a-z0-9-]*) = /);
    if (match?.[2] !== undefined) {
      found.set(match[2], [match[1] !== undefined, line.replace(/^# /, "")]);
    }
  }
  return found;
}

Deno.test("the default configuration names every setting punchd has, and no other", () => {
  assertEquals([...settings().keys()].sort(), Object.keys(CONFIG_SETTINGS).sort());
});

Deno.test("as shipped, the default configuration sets only the socket's group, punchd", () => {
  const args = configFileArgs(FILE, CONFIG_SETTINGS, new Set());
  assertEquals(args.join(" ").replace(/^--group=/, "--group "), "--group punchd");
});

Deno.test("every example in the default configuration, uncommented, is one punchd accepts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-config-" });
  try {
    await Deno.writeTextFile(`${dir}/secret`, "example\n");
    // The two TURN credential files exclude each other: one file with each. The group is left
    // out: it must exist on this host.
    for (const without of ["turn-secret-file", "turn-password-file"]) {
      const lines = [...settings()]
        .filter(([key]) => key !== without && key !== "group")
        .map(([, [, line]]) => line.replace(/"\/etc\/punchd\/turn-[a-z]+"/, `"${dir}/secret"`));
      const path = `${dir}/punchd.toml`;
      await Deno.writeTextFile(path, lines.join("\n") + "\n");
      const invocation = parseCommandLine(["--config", path]);
      assertEquals(invocation.kind, "run", without);
      if (invocation.kind === "run") {
        // stun (2) and probe (2) examples, in that order.
        assertEquals(invocation.config.probes.length, 4, without);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
