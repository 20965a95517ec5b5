import { assertEquals, assertRejects, assertThrows } from "../assert.ts";
import { RendezvousClient, RendezvousRefused } from "../../src/rendezvous/client.ts";
import { CredentialPolicy, tokenFor } from "../../src/rendezvous/credentials.ts";
import { LinePeer, UdpPeer, withServer } from "./peers.ts";

const SECRET = new TextEncoder().encode("0123456789abcdef-server-secret");
const ALICE = tokenFor(SECRET, "alice");
const MINE = "my-own-credential-0001";
const GUESS = "a-guessed-credential-99";

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((r) => setTimeout(r, 10));
}

Deno.test("with a server secret, registering takes the ID's token", async () => {
  await withServer({ auth: { mode: "secret", secret: SECRET } }, async (server) => {
    const peer = await LinePeer.connect(server.address);
    try {
      assertEquals(await peer.ask("register|alice"), ["error|register|credential required"]);
      assertEquals(await peer.ask(`register|bob|${ALICE}`), ["error|register|wrong credential"]);
      // One guess per connection: the server closes it after a wrong credential.
      assertEquals(await peer.readToEnd(), "");
    } finally {
      peer.close();
    }
    const owner = await LinePeer.connect(server.address);
    try {
      assertEquals(await owner.ask(`register|alice|${ALICE}`), ["ok|register|alice"]);
    } finally {
      owner.close();
    }
  });
});

Deno.test("with a server secret, the token holder takes its ID over from a stale connection", async () => {
  await withServer({ auth: { mode: "secret", secret: SECRET } }, async (server) => {
    const stale = await LinePeer.connect(server.address);
    const fresh = await LinePeer.connect(server.address);
    try {
      assertEquals(await stale.ask(`register|alice|${ALICE}`), ["ok|register|alice"]);
      assertEquals(await fresh.ask(`register|alice|${ALICE}`), ["ok|register|alice"]);
      assertEquals(
        await stale.readToEnd(),
        "error|register|alice registered from another connection\n",
      );
      assertEquals(await fresh.ask("notify|alice|hello", 2), [
        "notify|alice|hello",
        "ok|notify|alice",
      ]);
    } finally {
      stale.close();
      fresh.close();
    }
  });
});

Deno.test("with a server secret, UDP names take their token too", async () => {
  await withServer({ auth: { mode: "secret", secret: SECRET } }, async (server) => {
    const peer = new UdpPeer();
    try {
      assertEquals(
        await peer.ask(server.address, "register|alice"),
        "error|register|credential required",
      );
      assertEquals(
        await peer.ask(server.address, `register|alice|${GUESS}`),
        "error|register|wrong credential",
      );
      assertEquals(
        await peer.ask(server.address, `register|alice|${ALICE}`),
        `registered|alice|127.0.0.1|${peer.port}`,
      );
    } finally {
      peer.close();
    }
  });
});

Deno.test("without a secret, the first registration with a credential binds the ID to it", async () => {
  await withServer({ auth: { mode: "open", bindingTtlMs: 60_000 } }, async (server) => {
    const owner = await LinePeer.connect(server.address);
    assertEquals(await owner.ask(`register|alice|${MINE}`), ["ok|register|alice"]);
    owner.close();
    await waitFor(() => server.peerCount === 0);
    // The owner is gone, but its ID is not free for others.
    const thief = await LinePeer.connect(server.address);
    try {
      assertEquals(await thief.ask("register|alice"), ["error|register|credential required"]);
      assertEquals(await thief.ask(`register|alice|${GUESS}`), [
        "error|register|wrong credential",
      ]);
      assertEquals(await thief.readToEnd(), "");
    } finally {
      thief.close();
    }
    const back = await LinePeer.connect(server.address);
    try {
      assertEquals(await back.ask(`register|alice|${MINE}`), ["ok|register|alice"]);
    } finally {
      back.close();
    }
  });
});

Deno.test("without a secret, a binding ends its TTL after the last registration", async () => {
  await withServer({ auth: { mode: "open", bindingTtlMs: 100 } }, async (server) => {
    const owner = await LinePeer.connect(server.address);
    assertEquals(await owner.ask(`register|alice|${MINE}`), ["ok|register|alice"]);
    owner.close();
    await waitFor(() => server.peerCount === 0);
    await new Promise((r) => setTimeout(r, 200));
    const next = await LinePeer.connect(server.address);
    try {
      assertEquals(await next.ask("register|alice"), ["ok|register|alice"]);
    } finally {
      next.close();
    }
  });
});

Deno.test("a credential cannot take over an ID that was registered without one", async () => {
  await withServer({ auth: { mode: "open" } }, async (server) => {
    const owner = await LinePeer.connect(server.address);
    const thief = await LinePeer.connect(server.address);
    try {
      assertEquals(await owner.ask("register|bob"), ["ok|register|bob"]);
      assertEquals(await thief.ask(`register|bob|${GUESS}`), ["error|register|peer ID is taken"]);
      assertEquals(await owner.ask("ping"), ["pong"]);
    } finally {
      owner.close();
      thief.close();
    }
  });
});

Deno.test("the client registers with an optional credential", async () => {
  await withServer({ auth: { mode: "secret", secret: SECRET } }, async (server) => {
    const without = await RendezvousClient.connect(server.address);
    try {
      await assertRejects(
        () => without.register("alice"),
        RendezvousRefused,
        "rendezvous server refused register: credential required",
      );
    } finally {
      await without.close();
    }
    const client = await RendezvousClient.connect(server.address);
    try {
      await assertRejects(() => client.register("alice", "short"), RangeError);
      await client.register("alice", ALICE);
      await client.publish("tcp", "10.0.0.1", [4000]);
      assertEquals(await client.query("alice", "tcp"), { ip: "10.0.0.1", ports: [4000] });
    } finally {
      await client.close();
    }
  });
});

Deno.test("a policy refuses a secret shorter than 16 bytes", () => {
  assertThrows(
    () =>
      new CredentialPolicy({
        mode: "secret",
        secret: new Uint8Array(8),
        bindingTtlMs: 0,
        maxBindings: 1,
        maxBindingsPerAddress: 1,
      }),
    RangeError,
    "Cannot use a secret shorter than 16 bytes",
  );
});

Deno.test("--print-token prints the ID's token under --secret-file", async () => {
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeFile(file, SECRET, { mode: 0o600 });
    const main = new URL("../../src/rendezvous/main.ts", import.meta.url).pathname;
    const { code, stdout } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-ffi",
        "--allow-read",
        main,
        "--secret-file",
        file,
        "--print-token",
        "alice",
      ],
      stdin: "null",
      stderr: "null",
    }).output();
    assertEquals([code, new TextDecoder().decode(stdout)], [0, ALICE + "\n"]);
  } finally {
    await Deno.remove(file);
  }
});
