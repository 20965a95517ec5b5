import { assert, assertEquals, assertMatch, assertRejects } from "../assert.ts";
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
  assertMatch(routerRuleset("shifting"), /masquerade to :th sport \^ 0x1000/);
  assertMatch(routerRuleset("sequential"), /masquerade to :numgen inc mod 1024 map \{ 0 : 40000, /);
  assertMatch(routerRuleset("hairpin"), /dnat to meta l4proto \. th dport map @owners/);
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

/**
 * Sends one UDP datagram from `ns` (local port `srcPort`) to each of `targets`
 * in turn, where a UDP echo server in the internet namespace answers with the
 * source it saw; returns those sources ("IP:PORT"), in order.
 */
async function observedUdpSources(
  lab: Lab,
  ns: string,
  srcPort: number,
  targets: number[],
): Promise<string[]> {
  const ports = targets.join(",");
  const server = lab.spawn(lab.internet.ns, [
    "python3",
    "-c",
    "import socket,select\nss=[]\n" +
    `for p in [${ports}]:\n  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('${lab.serverIp}',p));ss.append(s)\n` +
    "print('ready',flush=True)\nn=0\n" +
    `while n<${targets.length}:\n  r,_,_=select.select(ss,[],[],5)\n  if not r: break\n` +
    "  for s in r:\n    d,a=s.recvfrom(100);s.sendto(f'{a[0]}:{a[1]}'.encode(),a);n+=1",
  ]);
  try {
    const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assertEquals((await reader.read()).value?.trim(), "ready");
    reader.releaseLock();
    const client = await lab.tryExec(ns, [
      "python3",
      "-c",
      "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)\n" +
      `s.bind(('0.0.0.0',${srcPort}))\nfor p in [${ports}]:\n` +
      `  s.sendto(b'x',('${lab.serverIp}',p));print(s.recv(100).decode())`,
    ]);
    assertEquals(client.code, 0, client.stderr);
    return client.stdout.trim().split("\n");
  } finally {
    await server.status;
    await server.stdout.cancel().catch(() => {});
    await server.stderr.cancel();
  }
}

Deno.test({
  name:
    "the shifting profile maps a local port to the same other public port for every destination",
  ignore: needsRoot,
}, async () => {
  await using lab = await Lab.create({ natA: "shifting", natB: "preserving" });
  // 20000 ^ 0x1000 = 24096, to both destinations; the next local port gets its own shifted port.
  assertEquals(await observedUdpSources(lab, lab.hostA.ns, 20000, [9001, 9002]), [
    `${lab.publicA}:24096`,
    `${lab.publicA}:24096`,
  ]);
  assertEquals(await observedUdpSources(lab, lab.hostA.ns, 20001, [9003]), [
    `${lab.publicA}:24097`,
  ]);
});

Deno.test({
  name: "the sequential profile gives every new flow the next public port",
  ignore: needsRoot,
}, async () => {
  await using lab = await Lab.create({ natA: "sequential", natB: "preserving" });
  const first = await observedUdpSources(lab, lab.hostA.ns, 20000, [9001, 9002, 9003]);
  const second = await observedUdpSources(lab, lab.hostA.ns, 25000, [9004]);
  const ports = [...first, ...second].map((s) => {
    assert(s.startsWith(`${lab.publicA}:`), s);
    return Number(s.split(":")[1]);
  });
  const base = ports[0] ?? 0;
  assert(base >= 40000 && base < 41024, `${base}`);
  assertEquals(ports, [base, base + 1, base + 2, base + 3]);
});

Deno.test({
  name:
    "the hairpin profile sends a flow to the router's public endpoint on to the host that owns it",
  ignore: needsRoot,
}, async () => {
  await using lab = await Lab.create({ natA: "hairpin", natB: "hairpin" });
  assertEquals(lab.publicB, lab.publicA);
  // Both hosts open their mappings towards the server and see the one public address.
  assertEquals(await observedUdpSources(lab, lab.hostA.ns, 20000, [9001]), [
    `${lab.publicA}:20000`,
  ]);
  assertEquals(await observedUdpSources(lab, lab.hostB.ns, 30000, [9001]), [
    `${lab.publicA}:30000`,
  ]);
  // A listens on its mapped port; B sends to A's public endpoint and is seen at its own.
  const listener = lab.spawn(lab.hostA.ns, [
    "python3",
    "-c",
    "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(5)\n" +
    "s.bind(('0.0.0.0',20000));print('ready',flush=True)\nd,a=s.recvfrom(100);print(f'{a[0]}:{a[1]}')",
  ]);
  const reader = listener.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  try {
    assertEquals((await reader.read()).value?.trim(), "ready");
    const sent = await lab.tryExec(lab.hostB.ns, [
      "python3",
      "-c",
      "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n" +
      `s.bind(('0.0.0.0',30000));s.sendto(b'x',('${lab.publicA}',20000))`,
    ]);
    assertEquals(sent.code, 0, sent.stderr);
    for (let r = await reader.read(); !r.done; r = await reader.read()) seen += r.value;
  } finally {
    reader.releaseLock();
    await listener.status;
    await listener.stdout.cancel().catch(() => {});
    await listener.stderr.cancel();
  }
  assertEquals(seen.trim(), `${lab.publicA}:30000`);
});

Deno.test("a hairpin lab needs hairpin on both sides", async () => {
  await assertRejects(
    () => Lab.create({ natA: "hairpin", natB: "preserving" }),
    RangeError,
    'Cannot build NAT profile "hairpin"',
  );
});
