import { assert, assertEquals, assertMatch } from "../assert.ts";

const MAIN = new URL("../../src/rendezvous/main.ts", import.meta.url).pathname;

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", MAIN, ...args],
    stdin: "null",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code, out: text(stdout), err: text(stderr) };
}

const FLAGS = [
  "--max-connections",
  "--max-connections-per-ip",
  "--max-ids-per-ip",
  "--max-udp-names-per-ip",
  "--udp-connect-rate",
  "--register-timeout",
  "--notify-rate",
  "--notify-burst",
  "--max-queued-kib",
  "--stuck-timeout",
  "--secret-file",
  "--binding-ttl",
  "--print-token",
];

Deno.test("--help documents every limit and authentication flag", async () => {
  const { code, out } = await run(["--help"]);
  assertEquals(code, 0);
  for (const flag of FLAGS) assert(out.includes(flag), `--help does not mention ${flag}`);
});

const BAD: [string[], RegExp][] = [
  [["--max-connections-per-ip", "0"], /--max-connections-per-ip: 0 is out of range 1-1000000/],
  [["--register-timeout", "1e3"], /--register-timeout: "1e3" is not a whole number/],
  [["--max-queued-kib", "2"], /--max-queued-kib: 2 is out of range 4-65536/],
  [["--print-token", "alice"], /--print-token needs --secret-file/],
  [["--secret-file", "/nonexistent/secret"], /No such file|not found/i],
];

Deno.test("bad limit flags exit 2 with the flag named", async () => {
  for (const [args, message] of BAD) {
    const { code, err } = await run(["--listen", "127.0.0.1:1", ...args]);
    assertEquals(code, 2, args.join(" "));
    assertMatch(err, message);
  }
});

Deno.test("a secret file shorter than 16 bytes is refused", async () => {
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(file, "short\n", { mode: 0o600 });
    const { code, err } = await run(["--secret-file", file, "--print-token", "alice"]);
    assertEquals(code, 2);
    assertMatch(err, /it holds 5 bytes, at least 16 needed/);
  } finally {
    await Deno.remove(file);
  }
});
