/**
 * The systemd unit (src/packaging/punchd.service): the settings the service
 * depends on, and systemd's own rating of its sandbox. (deb_test.ts runs
 * `systemd-analyze verify` on the installed unit; deb_service_test.ts runs
 * its ExecStart as its User with its capabilities.)
 *
 * @module
 */

import { assert, assertEquals } from "../assert.ts";
import { skipUnless } from "../helpers/skip.ts";
import { have, run } from "./build.ts";

const PATH = new URL("../../src/packaging/punchd.service", import.meta.url).pathname;
const UNIT = Deno.readTextFileSync(PATH);

/** The [Service] section's settings, key -> values in order. */
function service(): Map<string, string[]> {
  const section = UNIT.split(/^\[Service\]$/m)[1]?.split(/^\[/m)[0] ?? "";
  const settings = new Map<string, string[]>();
  for (const line of section.split("\n")) {
    const match = line.match(/^([A-Za-z]+)=(.*)$/);
    if (match?.[1] === undefined) continue;
    settings.set(match[1], [...settings.get(match[1]) ?? [], match[2] ?? ""]);
  }
  return settings;
}

Deno.test("the unit runs punchd as user punchd with its configuration, notifying, hardened", () => {
  const settings = service();
  const expected: Record<string, string> = {
    Type: "notify",
    ExecStart: "/usr/bin/punchd --config /etc/punchd/punchd.toml",
    Restart: "on-failure",
    User: "punchd",
    Group: "punchd",
    RuntimeDirectory: "punchd",
    RuntimeDirectoryMode: "0750",
    AmbientCapabilities: "CAP_NET_ADMIN CAP_NET_RAW",
    CapabilityBoundingSet: "CAP_NET_ADMIN CAP_NET_RAW",
    NoNewPrivileges: "yes",
    ProtectSystem: "strict",
    ProtectHome: "yes",
    PrivateTmp: "yes",
  };
  for (const [key, value] of Object.entries(expected)) {
    assertEquals(settings.get(key), [value], key);
  }
  // V8 writes the code it compiles: MemoryDenyWriteExecute would kill it at start.
  assertEquals(settings.get("MemoryDenyWriteExecute"), undefined);
  assertEquals(/^WantedBy=multi-user\.target$/m.test(UNIT), true);
});

Deno.test({
  name: "systemd-analyze security rates the unit's sandbox 4.0 or better (OK)",
  ignore: skipUnless(
    have("systemd-analyze"),
    "unit security",
    "systemd-analyze is not installed (apt-get install systemd)",
  ),
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-unit-" });
  try {
    await Deno.copyFile(PATH, `${dir}/punchd.service`);
    const ran = await run([
      "systemd-analyze",
      "security",
      "--offline=yes",
      "--no-pager",
      "--threshold=40",
      "punchd.service",
    ], { cwd: dir });
    const score = ran.stdout.match(/Overall exposure level for punchd\.service: ([\d.]+)/)?.[1];
    assert(score !== undefined, ran.stdout + ran.stderr);
    assert(Number(score) <= 4.0, `exposure ${score}:\n${ran.stdout}`);
    assertEquals(ran.code, 0, ran.stdout + ran.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
