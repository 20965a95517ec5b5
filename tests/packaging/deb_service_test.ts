/**
 * The packaged service as systemd would run it, without systemd: in a
 * throwaway root with the .deb installed, and a network namespace of its
 * own, the unit's ExecStart runs as the unit's User and Group with only the
 * unit's capabilities (ambient and bounding), no new privileges, the
 * RuntimeDirectory systemd would make, and a NOTIFY_SOCKET; punchd says
 * READY=1, serves status on /run/punchd/punchd.socket (mode 0660, group
 * punchd, as the default configuration asks), and says STOPPING=1 and exits
 * 0 on SIGTERM.
 *
 * @module
 */

import { assertEquals, assertMatch } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { PunchdClient } from "../../src/client/client.ts";
import { VERSION } from "../../src/daemon/config.ts";
import { collectOutput } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";
import { builtDeb, have } from "./build.ts";
import { overlayAvailable, ThrowawayRoot } from "./chroot.ts";

const ignore = skipUnless(
  isRoot() && have("dpkg-deb") && have("unshare") && have("nsenter") && have("setpriv") &&
    overlayAvailable(),
  "deb service test",
  "needs root, dpkg-deb, unshare, nsenter, setpriv and overlayfs",
);

const UNIT = Deno.readTextFileSync(
  new URL("../../src/packaging/punchd.service", import.meta.url),
);

/** The value of `key` in the unit's [Service] section. */
function setting(key: string): string {
  const value = UNIT.match(new RegExp(`^${key}=(.*)$`, "m"))?.[1];
  if (value === undefined) throw new Error(`punchd.service has no ${key}=`);
  return value;
}

/** The next datagram on `socket` as text (30 s at most). */
async function nextNotice(socket: Socket): Promise<string> {
  const buf = new Uint8Array(4096);
  // read, not receiveFrom: the sender's socket is unnamed (an empty address).
  const length = await socket.read(buf, AbortSignal.timeout(30_000));
  return new TextDecoder().decode(buf.subarray(0, length));
}

Deno.test(
  { name: "the packaged service starts, notifies and serves as its unit says", ignore },
  async () => {
    const deb = await builtDeb();
    await using root = await ThrowawayRoot.create();
    await root.copyIn(deb, "/tmp/punchd.deb");
    const installed = await root.run(["dpkg", "-i", "/tmp/punchd.deb"]);
    assertEquals(installed.code, 0, installed.stdout + installed.stderr);
    const user = setting("User");
    const group = setting("Group");
    const ids = await root.run(["getent", "passwd", user]);
    const [uid, gid] = ids.stdout.split(":").slice(2, 4).map(Number) as [number, number];
    // RuntimeDirectory=punchd with RuntimeDirectoryMode: made by systemd, owned by the service.
    assertEquals(setting("RuntimeDirectory"), "punchd");
    const made = await root.run([
      "install",
      "-d",
      "-o",
      user,
      "-g",
      group,
      "-m",
      setting("RuntimeDirectoryMode"),
      "/run/punchd",
    ]);
    assertEquals(made.code, 0, made.stderr);
    // The notification socket, reached from here through the holder's root.
    const outside = (path: string) => `/proc/${root.pid}/root${root.root}${path}`;
    using notify = Socket.create("unix", "datagram");
    notify.bind({ family: "unix", path: outside("/run/notify") });
    await Deno.chmod(outside("/run/notify"), 0o666);
    const caps = setting("AmbientCapabilities").toLowerCase().split(/\s+/).map((c) =>
      `+${c.replace(/^cap_/, "")}`
    ).join(",");
    assertEquals(setting("CapabilityBoundingSet"), setting("AmbientCapabilities"));
    assertEquals(setting("NoNewPrivileges"), "yes");
    const execStart = setting("ExecStart").split(/\s+/);
    const child = root.spawn([
      "unshare",
      "--net",
      "setpriv",
      `--reuid=${user}`,
      `--regid=${group}`,
      "--init-groups",
      `--inh-caps=-all,${caps}`,
      `--ambient-caps=-all,${caps}`,
      `--bounding-set=-all,${caps}`,
      "--no-new-privs",
      "env",
      "NOTIFY_SOCKET=/run/notify",
      ...execStart,
    ]);
    const { output, sofar } = collectOutput(child);
    let stopped = false;
    try {
      assertMatch(await nextNotice(notify), /^READY=1$/m, sofar());
      const status = Deno.readTextFileSync(`/proc/${child.pid}/status`);
      assertEquals(status.match(/^Uid:\s+(\d+)/m)?.[1], String(uid));
      // CAP_NET_ADMIN (12) and CAP_NET_RAW (13), nothing else.
      assertEquals(status.match(/^CapEff:\s+(\S+)/m)?.[1], "0000000000003000");
      const socketPath = outside("/run/punchd/punchd.socket");
      const socket = Deno.statSync(socketPath);
      assertEquals([socket.mode! & 0o777, socket.gid], [0o660, gid]);
      const client = await PunchdClient.connect(socketPath, { daemonUid: uid });
      try {
        assertEquals((await client.status()).version, VERSION);
      } finally {
        await client.close();
      }
      // The installed punchctl, with no uid named, accepts the service user as punchd.
      const ctl = await root.run(["punchctl", "status", "--json"]);
      assertEquals(ctl.code, 0, ctl.stderr);
      assertEquals(JSON.parse(ctl.stdout).pid, child.pid);
      child.kill("SIGTERM");
      stopped = true;
      assertMatch(await nextNotice(notify), /^STOPPING=1$/m, sofar());
      assertEquals((await child.status).code, 0, sofar());
    } finally {
      if (!stopped) child.kill("SIGKILL");
      await child.status;
      await output;
    }
  },
);
