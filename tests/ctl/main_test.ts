/**
 * punchctl as a process: what it prints where and its exit code, for help,
 * version, bad command lines and each way a command fails before any data
 * (stdout stays empty: it is the data stream).
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { parseHostPort } from "../../src/discovery/endpoint.ts";
import { RendezvousClient } from "../../src/rendezvous/client.ts";
import { HELP } from "../../src/ctl/command_line.ts";
import { VERSION } from "../../src/daemon/config.ts";
import { freePort, startDaemon } from "../helpers/daemon.ts";
import { rendezvousServer } from "./servers.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const CTL_MAIN = new URL("../../src/ctl/main.ts", import.meta.url).pathname;

async function punchctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", CTL_MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("punchctl --help prints the help on stdout and exits 0", async () => {
  assertEquals(await punchctl(["--help"]), { code: 0, stdout: HELP + "\n", stderr: "" });
});

Deno.test("punchctl -V prints its version and exits 0", async () => {
  assertEquals(await punchctl(["-V"]), { code: 0, stdout: `punchctl ${VERSION}\n`, stderr: "" });
});

Deno.test("a bad command line exits 2 with one line on stderr and nothing on stdout", async () => {
  assertEquals(await punchctl(["connect", "--id", "alice", "bob"]), {
    code: 2,
    stdout: "",
    stderr: "punchctl: connect needs --rendezvous (see --help)\n",
  });
  assertEquals(await punchctl([]), {
    code: 2,
    stdout: "",
    stderr:
      "punchctl: a command is needed: status, report, initiate, respond, connect, listen (see --help)\n",
  });
});

Deno.test("status without punchd at --socket exits 1 and says where it looked", async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchctl-test-" });
  try {
    const result = await punchctl(["status", "--socket", `${dir}/none.socket`]);
    assertEquals([result.code, result.stdout], [1, ""]);
    assertMatch(
      result.stderr,
      new RegExp(`^punchctl: failed: Cannot connect to punchd at ${dir}/none\\.socket: .*ENOENT`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connect exits 1 when the rendezvous server cannot be reached", async () => {
  const port = freePort();
  const result = await punchctl([
    "connect",
    "--rendezvous",
    `127.0.0.1:${port}`,
    "--id",
    "alice",
    "bob",
  ]);
  assertEquals([result.code, result.stdout], [1, ""]);
  assertEquals(
    result.stderr,
    `punchctl: failed: Cannot connect to the rendezvous server 127.0.0.1:${port}: Cannot connect: ECONNREFUSED (111)\n`,
  );
});

const UNKNOWN_PEER =
  "connect to a peer the rendezvous server does not know exits 1 and names the refusal";
Deno.test({
  name: UNKNOWN_PEER,
  ignore: skipUnless(isRoot(), UNKNOWN_PEER, "punchd runs as root"),
}, async () => {
  const server = await rendezvousServer();
  try {
    await using daemon = await startDaemon();
    const result = await punchctl([
      "connect",
      "--socket",
      daemon.socketPath,
      "--rendezvous",
      server.address,
      "--id",
      "alice",
      "--local-ip",
      "127.0.0.1",
      "nobody",
    ]);
    assertEquals([result.code, result.stdout], [1, ""], result.stderr);
    assertMatch(
      result.stderr,
      /^punchctl: registered as alice, published 127\.0\.0\.1 \d+ \(local\)$/m,
    );
    assertMatch(
      result.stderr,
      /^punchctl: failed: rendezvous server refused query: unknown peer$/m,
    );
  } finally {
    await server.stop();
  }
});

const TIMEOUT =
  "connect gives up after --timeout when the peer never answers, and exits 1 saying so";
Deno.test({
  name: TIMEOUT,
  ignore: skipUnless(isRoot(), TIMEOUT, "punchd runs as root"),
}, async () => {
  const server = await rendezvousServer();
  try {
    await using daemon = await startDaemon();
    // bob registers and publishes a UDP endpoint on loopback that never answers.
    using silent = Socket.create("inet", "datagram");
    silent.bind(inetAddress("127.0.0.1", 0));
    const local = silent.localAddress();
    const bobPort = local.family === "unix" ? 0 : local.port;
    const bob = await RendezvousClient.connect(parseHostPort(server.address));
    try {
      await bob.register("bob");
      await bob.publish("udp", "127.0.0.1", [bobPort]);
      const started = Date.now();
      const result = await punchctl([
        "connect",
        "--socket",
        daemon.socketPath,
        "--rendezvous",
        server.address,
        "--id",
        "alice",
        "--local-ip",
        "127.0.0.1",
        "--technique",
        "udp",
        "--timeout",
        "2",
        "bob",
      ]);
      const elapsed = Date.now() - started;
      assertEquals([result.code, result.stdout], [1, ""], result.stderr);
      assertMatch(
        result.stderr,
        /^punchctl: failed: Cannot connect to bob: no connection within 2 s \(--timeout\)$/m,
      );
      assert(elapsed < 8000, `took ${elapsed} ms`);
    } finally {
      await bob.close();
    }
  } finally {
    await server.stop();
  }
});
