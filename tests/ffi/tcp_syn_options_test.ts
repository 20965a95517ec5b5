import { assertEquals, assertThrows } from "../assert.ts";
import { inNetns } from "../../ffi/netns.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { tcpInfo } from "../../ffi/tcp_info.ts";
import { kernelSynOptions, windowScaleFor } from "../../ffi/tcp_syn_options.ts";
import { withVoidNamespace } from "../helpers/void_ns.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = skipUnless(
  isRoot(),
  "kernel SYN option tests",
  "network namespaces and TCP_REPAIR need root",
);

Deno.test("the window scale is the shift that fits the largest receive buffer in 16 bits", () => {
  const cases: [number, number][] = [
    [0, 0],
    [65535, 0],
    [65536, 1],
    [212992, 2], // rmem_max's usual default
    [4194304, 7],
    [6291456, 7], // tcp_rmem[2]'s usual default
    [8388608, 8],
    [33554432, 10],
    [2 ** 31, 14], // at most 14 (RFC 7323)
  ];
  for (const [space, shift] of cases) assertEquals(windowScaleFor(space), shift, `${space}`);
  assertThrows(() => windowScaleFor(-1), RangeError);
  assertThrows(() => windowScaleFor(1.5), RangeError);
});

/** A loopback connection in `ns`: the client's TCP_INFO once it is established. */
async function kernelConnection(ns: string) {
  const [listener, client] = inNetns(ns, () => [
    Socket.create("inet", "stream"),
    Socket.create("inet", "stream"),
  ]) as [Socket, Socket];
  using _l = listener;
  using _c = client;
  listener.bind(inetAddress("127.0.0.1", 0));
  listener.listen(1);
  const accepted = listener.accept();
  await client.connect(listener.localAddress());
  using _s = (await accepted).socket;
  return tcpInfo(client);
}

Deno.test({
  name:
    "what the probe says the kernel offers is what a kernel connection negotiates, whatever the namespace's sysctls",
  ignore: ROOT,
}, async () => {
  await withVoidNamespace("synopts", async (ns) => {
    const run = (args: string[]) =>
      new Deno.Command("ip", { args: ["netns", "exec", ns, ...args] });
    await run(["ip", "link", "set", "lo", "up"]).output();
    const settings: [string, string][] = [
      ["4096 131072 33554432", "1"],
      ["4096 131072 1048576", "0"],
    ];
    for (const [rmem, sack] of settings) {
      const set = await run([
        "sysctl",
        "-qw",
        `net.ipv4.tcp_rmem=${rmem}`,
        `net.ipv4.tcp_sack=${sack}`,
        "net.core.rmem_max=212992",
      ]).output();
      assertEquals(set.success, true);
      const probe = inNetns(
        ns,
        () => kernelSynOptions(inetAddress("127.0.0.1", 0), inetAddress("127.0.0.1", 9)),
      );
      const real = await kernelConnection(ns);
      assertEquals(probe.windowScale, real.rcvWscale, rmem);
      assertEquals(probe.sackPermitted, real.sack);
      assertEquals(probe.timestamps, real.timestamps);
      // The kernel's advertised MSS loses the timestamp option's 12 bytes once they are on.
      assertEquals(probe.mss - (real.timestamps ? 12 : 0), real.advmss);
    }
  });
});
