import { assert, assertEquals, assertMatch } from "../assert.ts";
import { Lab, removeStaleLabs, routerRuleset } from "./lab.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

async function namespaces(): Promise<string[]> {
  const out = await new Deno.Command("ip", { args: ["netns", "list"] }).output();
  return new TextDecoder().decode(out.stdout).split("\n").map((l) => l.split(" ")[0] ?? "").filter((
    n,
  ) => n !== "");
}

const needsRoot = skipUnless(isRoot(), "NAT lab tests", "network namespaces need root");

Deno.test({
  name: "the lab builds five namespaces and removes all of them on close",
  ignore: needsRoot,
}, async () => {
  const lab = await Lab.create({ natA: "preserving", natB: "none" });
  try {
    const present = await namespaces();
    for (const ns of lab.namespaces) assert(present.includes(ns), `${ns} missing`);
    // A low-TTL probe from A dies in the internet router, which answers time-exceeded.
    const trace = await lab.tryExec(lab.hostA.ns, [
      "python3",
      "-c",
      "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,2);" +
      "s.setsockopt(socket.IPPROTO_IP,11,1);s.connect(('172.16.2.2',9));s.send(b'x');import time;time.sleep(0.3)\n" +
      "try: s.recv(10)\nexcept OSError as e: print(e.errno)",
    ]);
    assertEquals(trace.stdout.trim(), "113", trace.stderr); // EHOSTUNREACH from the ICMP time-exceeded
  } finally {
    await lab.close();
  }
  const after = await namespaces();
  for (const ns of lab.namespaces) assert(!after.includes(ns), `${ns} left behind`);
});

Deno.test({
  name: "a public host (no NAT) is reachable from the other side; a NATed one is not",
  ignore: needsRoot,
}, async () => {
  await using lab = await Lab.create({ natA: "preserving", natB: "none" });
  const server = lab.spawn(lab.hostB.ns, [
    "python3",
    "-c",
    "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',8080));s.listen();" +
    "s.settimeout(5);c,a=s.accept();c.send(a[0].encode());c.close()",
  ]);
  const probe = (ip: string) =>
    lab.tryExec(lab.hostA.ns, [
      "python3",
      "-c",
      // The server may not listen yet: retry refused connections for up to 5 s.
      "import socket,time\nfor i in range(50):\n  try:\n" +
      `    s=socket.create_connection(('${ip}',8080),timeout=2);break\n` +
      "  except ConnectionRefusedError: time.sleep(0.1)\nprint(s.recv(100).decode())",
    ]);
  const reached = await probe(lab.hostB.ip);
  assertEquals(reached.stdout.trim(), lab.publicA, "B did not see A's NAT public address");
  await server.output();
  // The other way: A is behind a NAT that drops unsolicited inbound traffic.
  const blocked = await lab.tryExec(lab.hostB.ns, [
    "python3",
    "-c",
    `import socket;socket.create_connection(('${lab.publicA}',8080),timeout=1)`,
  ]);
  assert(blocked.code !== 0);
  assertMatch(blocked.stderr, /timed out/);
});

Deno.test(
  { name: "the rst profile answers an unsolicited SYN with a reset", ignore: needsRoot },
  async () => {
    await using lab = await Lab.create({ natA: "rst", natB: "preserving" });
    const result = await lab.tryExec(lab.hostB.ns, [
      "python3",
      "-c",
      `import socket;socket.create_connection(('${lab.publicA}',8080),timeout=2)`,
    ]);
    assertMatch(result.stderr, /Connection refused/);
  },
);

Deno.test("router rulesets differ only where the profiles do", () => {
  assertMatch(routerRuleset("preserving"), /oifname "wan0" masquerade\n/);
  assertMatch(routerRuleset("symmetric"), /masquerade random/);
  assertMatch(routerRuleset("rst"), /reject with tcp reset/);
  assertEquals(routerRuleset("none").includes("masquerade"), false);
});

Deno.test({
  name: "namespaces left by a killed run are removed by the next lab",
  ignore: needsRoot,
}, async () => {
  // A name as a dead process (pid 1 is never a lab; use an impossible pid) would leave it.
  const stale = "pdlab4194304x0-a";
  await new Deno.Command("ip", { args: ["netns", "add", stale] }).output();
  const removed = await removeStaleLabs();
  assert(removed.includes(stale), `not removed: ${removed}`);
  assert(!(await namespaces()).includes(stale));
});
