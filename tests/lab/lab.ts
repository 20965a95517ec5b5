/**
 * The NAT lab: network namespaces joined by veth pairs, with Linux conntrack
 * NAT routers configured by nftables, used by end-to-end tests, the demo and
 * benchmarks.
 *
 * ```
 *  host A ─ lan ─ router A ═ wan ═╗                 ╔═ wan ═ router B ─ lan ─ host B
 *  10.0.1.2      10.0.1.1         ║    internet     ║        10.0.2.1      10.0.2.2
 *                172.16.1.2 ──────╨─ 172.16.1.1     ║
 *                                    172.16.2.1 ────╨────── 172.16.2.2
 *                                    172.16.0.1 (rendezvous / probe server)
 * ```
 *
 * A packet from host A with TTL 2 crosses router A (and its NAT) and dies in
 * the internet router, which answers with a real ICMP time-exceeded.
 *
 * Every name carries the creating process's pid and a counter, so parallel
 * runs never collide, and {@linkcode removeStaleLabs} can delete what a
 * killed run left. Addresses are private ranges inside the lab only; nothing
 * is routed to the host's own interfaces.
 *
 * @module
 */

import { type CommandResult, runCommand } from "../../src/process.ts";

/** How a NAT router treats traffic. */
export type NatProfile =
  /** Port-preserving masquerade; unsolicited inbound dropped (EIM, APDF: most home routers). */
  | "preserving"
  /** Masquerade with random ports per flow: endpoint-dependent mapping ("symmetric NAT"). */
  | "symmetric"
  /** Like "preserving", but unsolicited inbound TCP SYNs are answered with RST. */
  | "rst"
  /** Like "preserving", but an inbound pure SYN is dropped even on a flow that left as a SYN (no simultaneous open). */
  | "nosimopen"
  /** Like "preserving", but the router's own stack answers unsolicited packets to its public address (no input firewall: TCP RST, ICMP port unreachable), leaving UNREPLIED conntrack entries that take ports. */
  | "answering"
  /** Endpoint-independent mapping without port preservation: each local port always maps to the same other public port (port XOR 0x1000), whatever the destination; unsolicited inbound dropped (EIM, APDF). */
  | "shifting"
  /** Sequential allocation: every new flow gets the next public port (40000, 40001, ...), whatever its local port: endpoint-dependent but predictable mapping (`delta+1`); unsolicited inbound dropped. */
  | "sequential"
  /** Both hosts behind one port-preserving NAT (host B on router A's second LAN, 10.0.2.0/24) that hairpins: a flow from the LAN to the router's public address and a mapped port goes to the host that owns the mapping, with the sender's public endpoint as source; unsolicited inbound from the WAN dropped. Both natA and natB must be "hairpin"; IPv4 only. */
  | "hairpin"
  /** No NAT, a stateful firewall (RFC 6092 for IPv6): established/related in, every other inbound packet dropped. */
  | "firewall"
  /** No NAT: the host is public and reachable. */
  | "none"
  /**
   * Double NAT: the router is a home NAT ("preserving") whose WAN is in carrier-grade shared space
   * (100.64.1.2 / 100.64.2.2), behind a carrier-grade NAT namespace (port-preserving masquerade,
   * silent) that holds the public address (`publicA`/`publicB`). IPv4 only.
   */
  | "double";

/** Options of a lab. */
export interface LabOptions {
  natA: NatProfile;
  natB: NatProfile;
  /** netem on both routers' WAN links, e.g. { delayMs: 20, lossPercent: 1 }. */
  wan?: { delayMs?: number; lossPercent?: number };
  /**
   * A third, public host C (172.16.3.2) on the internet router, for tests
   * that need an outsider (e.g. one that sprays forged packets). The
   * internet router does no reverse-path filtering, so C can spoof.
   */
  thirdHost?: boolean;
  /**
   * An attacker on A's LAN (10.0.1.3, {@linkcode Lab.attackerA}): host A,
   * router A's `lan0` and the attacker then hang on a switch namespace whose
   * bridge learns no addresses, so it floods every frame to every port (a
   * hub, or a shared Wi-Fi cell): the attacker sees all of A's LAN traffic.
   */
  lanAttacker?: boolean;
  /** IPv6 beside IPv4 (ULA addresses, NAT66 masquerade with the same profiles): see {@linkcode Lab.v6}. */
  ipv6?: boolean;
}

/** A namespace of the lab. */
export interface Node {
  /** The netns name. */
  ns: string;
  /** Its main address. */
  ip: string;
}

/** Result of a command run in a namespace. */
export type { CommandResult };

const PREFIX = "pdlab";
let counter = 0;

const run = runCommand;

async function must(cmd: string, args: string[], input?: string): Promise<string> {
  const result = await run(cmd, args, input);
  if (result.code !== 0) {
    throw new Error(
      `Cannot run ${cmd} ${args.join(" ")}: ${result.stderr.trim() || `exit ${result.code}`}`,
    );
  }
  return result.stdout;
}

/** True while process `pid` exists. */
export function processAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Deletes lab namespaces whose creating process no longer runs. */
export async function removeStaleLabs(): Promise<string[]> {
  const list = await run("ip", ["netns", "list"]);
  const removed: string[] = [];
  for (const line of list.stdout.split("\n")) {
    const name = line.split(" ")[0] ?? "";
    const match = name.match(new RegExp(`^${PREFIX}(\\d+)x\\d+-`));
    if (match === null || processAlive(Number(match[1]))) continue;
    await run("ip", ["netns", "del", name]);
    removed.push(name);
  }
  return removed;
}

/** True when hosts behind a router of this profile have routable (un-NATed) addresses. */
export function isPublic(profile: NatProfile): boolean {
  return profile === "none" || profile === "firewall";
}

/**
 * The "sequential" profile's port choice: a flow counter (numgen) mapped to
 * 40000 + (count mod 1024). The map turns the counter into a port in network
 * byte order, which numgen's host-order value is not.
 */
const SEQUENTIAL_PORTS = `numgen inc mod 1024 map { ${
  Array.from({ length: 1024 }, (_, i) => `${i} : ${40000 + i}`).join(", ")
} }`;

/** The nftables ruleset of a NAT router. */
export function routerRuleset(profile: NatProfile): string {
  if (profile === "none") {
    return `table inet lab {
  chain forward { type filter hook forward priority 0; policy accept; }
}
`;
  }
  if (profile === "firewall") {
    return `table inet lab {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    iifname "lan0" accept
    meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
    iifname "wan0" drop
  }
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
    iifname "wan0" drop
  }
}
`;
  }
  if (profile === "hairpin") return HAIRPIN_RULESET;
  const masquerade = ({
    symmetric: "masquerade random",
    // A one-port range per flow; nat chains see only a flow's first packet, so numgen counts flows.
    shifting:
      'meta l4proto { tcp, udp } masquerade to :th sport ^ 0x1000\n    oifname "wan0" masquerade',
    sequential:
      `meta l4proto { tcp, udp } masquerade to :${SEQUENTIAL_PORTS}\n    oifname "wan0" masquerade`,
  } as Partial<Record<NatProfile, string>>)[profile] ?? "masquerade";
  const refuse = profile === "rst"
    ? `meta l4proto tcp tcp flags & (syn|ack) == syn reject with tcp reset\n    drop`
    : "drop";
  // Before conntrack's verdict: an inbound SYN without ACK never passes, whatever flow it matches.
  const noSimultaneousOpen = profile === "nosimopen"
    ? `iifname "wan0" meta l4proto tcp tcp flags & (syn|ack) == syn drop\n    `
    : "";
  // An answering router has no input firewall: its own stack replies to what nothing asked for.
  const input = profile === "answering" ? "" : `iifname "wan0" ${refuse}`;
  return `table ip labnat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" ${masquerade}
  }
}
table ip6 labnat6 {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" ${masquerade}
  }
}
table inet lab {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ${noSimultaneousOpen}ct state established,related accept
    iifname "lan0" accept
    iifname "wan0" ${refuse}
  }
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
    ${input}
  }
}
`;
}

/**
 * Router A of the "hairpin" profile: port-preserving masquerade towards the
 * WAN; every flow leaving for the WAN records which LAN host owns its public
 * port, and a flow from either LAN to the public address and such a port is
 * sent to that host (DNAT) with the public address as its source (SNAT), so
 * the two hosts see each other's public endpoints, as they would across two
 * NATs.
 */
const HAIRPIN_RULESET = `table ip labnat {
  map owners {
    type inet_proto . inet_service : ipv4_addr
    flags dynamic,timeout
    timeout 5m
  }
  chain record {
    type filter hook forward priority 0; policy accept;
    iifname { "lan0", "lan1" } oifname "wan0" meta l4proto { tcp, udp } ct state new update @owners { meta l4proto . th sport : ip saddr }
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname { "lan0", "lan1" } ip daddr 172.16.1.2 meta l4proto { tcp, udp } dnat to meta l4proto . th dport map @owners
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade
    oifname { "lan0", "lan1" } ct status dnat snat to 172.16.1.2
  }
}
table inet lab {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    iifname { "lan0", "lan1" } accept
    iifname "wan0" drop
  }
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    iifname "wan0" drop
  }
}
`;

/** A built lab. Always `close()` it (or use `await using`). */
export class Lab {
  readonly id: string;
  readonly hostA: Node;
  readonly hostB: Node;
  readonly routerA: Node;
  readonly routerB: Node;
  /** The internet router; it also hosts the rendezvous/probe server. */
  readonly internet: Node;
  /** The third host, when `thirdHost` was asked for. */
  readonly hostC: Node;
  /** The attacker on A's LAN, when `lanAttacker` was asked for. */
  readonly attackerA: Node;
  /** The switch namespace of A's LAN, when `lanAttacker` was asked for. */
  readonly switchA: Node;
  /** The carrier-grade NAT in front of router A, when `natA` is "double" (its WAN is `publicA`). */
  readonly carrierA: Node;
  /** The carrier-grade NAT in front of router B, when `natB` is "double". */
  readonly carrierB: Node;
  /** The rendezvous/probe server's address (in the internet namespace). */
  readonly serverIp = "172.16.0.1";
  /** Router A's public address (what peers see of host A behind NAT). */
  readonly publicA = "172.16.1.2";
  /** Router B's public address (router A's with "hairpin", where host B is behind router A). */
  readonly publicB: string;
  /** The IPv6 addresses, when the lab was built with `ipv6`. */
  readonly v6 = {
    hostA: "fd00:1::2",
    hostB: "fd00:2::2",
    publicA: "fd00:a1::2",
    publicB: "fd00:b2::2",
    server: "fd00::1",
  } as const;
  readonly options: LabOptions;
  #closed = false;

  private constructor(id: string, options: LabOptions) {
    this.id = id;
    this.options = options;
    const ns = (role: string) => `${id}-${role}`;
    this.hostA = { ns: ns("a"), ip: "10.0.1.2" };
    this.hostB = { ns: ns("b"), ip: "10.0.2.2" };
    this.routerA = { ns: ns("ra"), ip: "172.16.1.2" };
    this.routerB = { ns: ns("rb"), ip: "172.16.2.2" };
    this.internet = { ns: ns("inet"), ip: "172.16.0.1" };
    this.hostC = { ns: ns("c"), ip: "172.16.3.2" };
    this.attackerA = { ns: ns("ma"), ip: "10.0.1.3" };
    this.switchA = { ns: ns("swa"), ip: "" };
    this.publicB = options.natA === "hairpin" ? this.publicA : "172.16.2.2";
    this.carrierA = { ns: ns("cga"), ip: "172.16.1.2" };
    this.carrierB = { ns: ns("cgb"), ip: "172.16.2.2" };
  }

  /** Builds the topology; on any failure everything built so far is removed. */
  static async create(options: LabOptions): Promise<Lab> {
    if (
      (options.natA === "hairpin") !== (options.natB === "hairpin") ||
      (options.natA === "hairpin" && options.ipv6)
    ) {
      throw new RangeError(
        'Cannot build NAT profile "hairpin": both natA and natB must be "hairpin", IPv4 only',
      );
    }
    await removeStaleLabs();
    const lab = new Lab(`${PREFIX}${Deno.pid}x${counter++}`, options);
    try {
      await lab.#build();
    } catch (error) {
      await lab.close();
      throw error;
    }
    return lab;
  }

  /** Every namespace of the lab. */
  get namespaces(): string[] {
    const nodes = [this.hostA, this.hostB, this.routerA, this.routerB, this.internet];
    if (this.options.thirdHost) nodes.push(this.hostC);
    if (this.options.lanAttacker) nodes.push(this.switchA, this.attackerA);
    if (this.options.natA === "double") nodes.push(this.carrierA);
    if (this.options.natB === "double") nodes.push(this.carrierB);
    return nodes.map((n) => n.ns);
  }

  async #link(a: string, nameA: string, b: string, nameB: string): Promise<void> {
    // Temporary names in the root namespace must be unique and short (15 bytes).
    const tmp = `pl${(Deno.pid % 100000).toString(36)}${(counter++).toString(36)}`;
    await must("ip", ["link", "add", `${tmp}a`, "type", "veth", "peer", "name", `${tmp}b`]);
    await must("ip", ["link", "set", `${tmp}a`, "netns", a]);
    await must("ip", ["link", "set", `${tmp}b`, "netns", b]);
    await this.exec(a, ["ip", "link", "set", `${tmp}a`, "name", nameA]);
    await this.exec(b, ["ip", "link", "set", `${tmp}b`, "name", nameB]);
  }

  async #build(): Promise<void> {
    for (const ns of this.namespaces) {
      await must("ip", ["netns", "add", ns]);
      // No duplicate address detection, for link-local addresses too (`nodad` covers only the
      // global ones): a router whose fe80:: address is still tentative delays its neighbour
      // discovery by about a second and holds the first IPv6 packets of a fresh lab.
      for (const key of ["all", "default"]) {
        await this.exec(ns, ["sysctl", "-qw", `net.ipv6.conf.${key}.accept_dad=0`]);
      }
      await this.exec(ns, ["ip", "link", "set", "lo", "up"]);
    }
    const { hostA, hostB, routerA, routerB, internet } = this;
    if (this.options.lanAttacker) await this.#buildSwitchA();
    else await this.#link(hostA.ns, "eth0", routerA.ns, "lan0");
    // With "hairpin" host B hangs on router A's second LAN; router B stays, with nothing behind it.
    const [routerOfB, lanOfB] = this.options.natA === "hairpin"
      ? [routerA, "lan1"]
      : [routerB, "lan0"];
    await this.#link(hostB.ns, "eth0", routerOfB.ns, lanOfB);
    await this.#link(routerA.ns, "wan0", internet.ns, "wana");
    await this.#link(routerB.ns, "wan0", internet.ns, "wanb");
    if (this.options.thirdHost) await this.#link(this.hostC.ns, "eth0", internet.ns, "wanc");
    const addr = async (ns: string, dev: string, cidr: string) => {
      await this.exec(ns, ["ip", "addr", "add", cidr, "dev", dev]);
      await this.exec(ns, ["ip", "link", "set", dev, "up"]);
    };
    await addr(hostA.ns, "eth0", "10.0.1.2/24");
    await addr(routerA.ns, "lan0", "10.0.1.1/24");
    if (this.options.lanAttacker) {
      await addr(this.attackerA.ns, "eth0", "10.0.1.3/24");
      await this.exec(this.attackerA.ns, ["ip", "link", "set", "eth0", "promisc", "on"]);
      await this.exec(this.attackerA.ns, ["ip", "route", "add", "default", "via", "10.0.1.1"]);
    }
    await addr(hostB.ns, "eth0", "10.0.2.2/24");
    await addr(routerOfB.ns, lanOfB, "10.0.2.1/24");
    await addr(routerA.ns, "wan0", "172.16.1.2/24");
    await addr(internet.ns, "wana", "172.16.1.1/24");
    await addr(routerB.ns, "wan0", "172.16.2.2/24");
    await addr(internet.ns, "wanb", "172.16.2.1/24");
    if (this.options.thirdHost) {
      await addr(this.hostC.ns, "eth0", "172.16.3.2/24");
      await addr(internet.ns, "wanc", "172.16.3.1/24");
      await this.exec(this.hostC.ns, ["ip", "route", "add", "default", "via", "172.16.3.1"]);
      for (const key of ["all", "default", "wanc"]) {
        await this.exec(internet.ns, ["sysctl", "-qw", `net.ipv4.conf.${key}.rp_filter=0`]);
      }
    }
    await this.exec(internet.ns, ["ip", "addr", "add", `${this.serverIp}/32`, "dev", "lo"]);
    await this.exec(hostA.ns, ["ip", "route", "add", "default", "via", "10.0.1.1"]);
    await this.exec(hostB.ns, ["ip", "route", "add", "default", "via", "10.0.2.1"]);
    await this.exec(routerA.ns, ["ip", "route", "add", "default", "via", "172.16.1.1"]);
    await this.exec(routerB.ns, ["ip", "route", "add", "default", "via", "172.16.2.1"]);
    // Only a public (un-NATed) LAN is routed on the internet.
    if (isPublic(this.options.natA)) {
      await this.exec(internet.ns, ["ip", "route", "add", "10.0.1.0/24", "via", "172.16.1.2"]);
    }
    if (isPublic(this.options.natB)) {
      await this.exec(internet.ns, ["ip", "route", "add", "10.0.2.0/24", "via", "172.16.2.2"]);
    }
    for (const ns of [routerA.ns, routerB.ns, internet.ns]) {
      await this.exec(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
    if (this.options.natA === "double") await this.#buildCarrierNat(routerA, this.carrierA, 1);
    if (this.options.natB === "double") await this.#buildCarrierNat(routerB, this.carrierB, 2);
    if (this.options.ipv6) await this.#buildIpv6();
    await this.exec(routerA.ns, ["nft", "-f", "-"], routerRuleset(this.options.natA));
    await this.exec(routerB.ns, ["nft", "-f", "-"], routerRuleset(this.options.natB));
    const wan = this.options.wan;
    if (wan && (wan.delayMs || wan.lossPercent)) {
      const netem = ["netem"];
      if (wan.delayMs) netem.push("delay", `${wan.delayMs}ms`);
      if (wan.lossPercent) netem.push("loss", `${wan.lossPercent}%`);
      for (const ns of [routerA.ns, routerB.ns]) {
        await this.exec(ns, ["tc", "qdisc", "add", "dev", "wan0", "root", ...netem]);
      }
    }
  }

  /** A's LAN as a hub: host A, router A's `lan0` and the attacker on a bridge that learns nothing. */
  async #buildSwitchA(): Promise<void> {
    const sw = this.switchA.ns;
    await this.exec(sw, ["ip", "link", "add", "br0", "type", "bridge"]);
    const ports: [string, string][] = [
      [this.hostA.ns, "eth0"],
      [this.routerA.ns, "lan0"],
      [this.attackerA.ns, "eth0"],
    ];
    for (const [i, [ns, name]] of ports.entries()) {
      await this.#link(ns, name, sw, `p${i}`);
      await this.exec(sw, ["ip", "link", "set", `p${i}`, "master", "br0"]);
      // Without learning every unicast frame is unknown, so the bridge floods it.
      await this.exec(sw, ["bridge", "link", "set", "dev", `p${i}`, "learning", "off"]);
      await this.exec(sw, ["ip", "link", "set", `p${i}`, "up"]);
    }
    await this.exec(sw, ["ip", "link", "set", "br0", "up"]);
  }

  /**
   * Profile "double": the carrier-grade NAT takes over the router's WAN link (and public address
   * 172.16.N.2); the router's new WAN is 100.64.N.2/24 (RFC 6598 shared space) on a link to it.
   *
   * ```
   *  host ─ lan ─ router (home NAT) ─ 100.64.N.2 ══ 100.64.N.1 ─ carrier NAT ─ 172.16.N.2 ══ internet
   * ```
   */
  async #buildCarrierNat(router: Node, carrier: Node, n: 1 | 2): Promise<void> {
    if (this.options.ipv6) {
      throw new RangeError(
        'Cannot build NAT profile "double" with ipv6: carrier-grade NAT is IPv4-only here',
      );
    }
    // Moving wan0 drops its address and the router's default route with it.
    await this.exec(router.ns, ["ip", "link", "set", "wan0", "netns", carrier.ns]);
    await this.#link(router.ns, "wan0", carrier.ns, "lan0");
    for (
      const [ns, dev, cidr] of [
        [carrier.ns, "wan0", `172.16.${n}.2/24`],
        [carrier.ns, "lan0", `100.64.${n}.1/24`],
        [router.ns, "wan0", `100.64.${n}.2/24`],
      ] as const
    ) {
      await this.exec(ns, ["ip", "addr", "add", cidr, "dev", dev]);
      await this.exec(ns, ["ip", "link", "set", dev, "up"]);
    }
    await this.exec(carrier.ns, ["ip", "route", "add", "default", "via", `172.16.${n}.1`]);
    await this.exec(router.ns, ["ip", "route", "add", "default", "via", `100.64.${n}.1`]);
    await this.exec(carrier.ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    await this.exec(carrier.ns, ["nft", "-f", "-"], routerRuleset("preserving"));
  }

  /** The IPv6 side of the topology: the same links, ULA addresses, no DAD delay. */
  async #buildIpv6(): Promise<void> {
    const { hostA, hostB, routerA, routerB, internet } = this;
    const addr = (ns: string, dev: string, cidr: string) =>
      this.exec(ns, ["ip", "-6", "addr", "add", cidr, "dev", dev, "nodad"]);
    await addr(hostA.ns, "eth0", "fd00:1::2/64");
    await addr(routerA.ns, "lan0", "fd00:1::1/64");
    await addr(hostB.ns, "eth0", "fd00:2::2/64");
    await addr(routerB.ns, "lan0", "fd00:2::1/64");
    await addr(routerA.ns, "wan0", "fd00:a1::2/64");
    await addr(internet.ns, "wana", "fd00:a1::1/64");
    await addr(routerB.ns, "wan0", "fd00:b2::2/64");
    await addr(internet.ns, "wanb", "fd00:b2::1/64");
    await this.exec(internet.ns, ["ip", "-6", "addr", "add", "fd00::1/128", "dev", "lo"]);
    await this.exec(hostA.ns, ["ip", "-6", "route", "add", "default", "via", "fd00:1::1"]);
    await this.exec(hostB.ns, ["ip", "-6", "route", "add", "default", "via", "fd00:2::1"]);
    await this.exec(routerA.ns, ["ip", "-6", "route", "add", "default", "via", "fd00:a1::1"]);
    await this.exec(routerB.ns, ["ip", "-6", "route", "add", "default", "via", "fd00:b2::1"]);
    if (isPublic(this.options.natA)) {
      await this.exec(internet.ns, [
        "ip",
        "-6",
        "route",
        "add",
        "fd00:1::/64",
        "via",
        "fd00:a1::2",
      ]);
    }
    if (isPublic(this.options.natB)) {
      await this.exec(internet.ns, [
        "ip",
        "-6",
        "route",
        "add",
        "fd00:2::/64",
        "via",
        "fd00:b2::2",
      ]);
    }
    for (const ns of [routerA.ns, routerB.ns, internet.ns]) {
      await this.exec(ns, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    }
  }

  /** Runs a command in namespace `ns`; throws with its stderr when it fails. */
  exec(ns: string, command: string[], input?: string): Promise<string> {
    return must("ip", ["netns", "exec", ns, ...command], input);
  }

  /** Runs a command in `ns` and returns its exit code and output, whatever they are. */
  tryExec(ns: string, command: string[]): Promise<CommandResult> {
    return run("ip", ["netns", "exec", ns, ...command]);
  }

  /** Spawns a long-running command in `ns` (the caller kills and awaits it). */
  spawn(
    ns: string,
    command: string[],
    options: { stdin?: "piped" | "null" } = {},
  ): Deno.ChildProcess {
    return new Deno.Command("ip", {
      args: ["netns", "exec", ns, ...command],
      stdin: options.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  }

  /** Deletes every namespace (and with them every veth, rule and route). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const ns of this.namespaces) await run("ip", ["netns", "del", ns]);
  }

  /** Same as close(). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** True when this kernel has the netem qdisc (the lab's optional WAN delay and loss). */
export async function netemAvailable(): Promise<boolean> {
  const ns = `${PREFIX}${Deno.pid}x${counter++}-netem`;
  if ((await run("ip", ["netns", "add", ns])).code !== 0) return false;
  try {
    return (await run("ip", [
      "netns",
      "exec",
      ns,
      "tc",
      "qdisc",
      "add",
      "dev",
      "lo",
      "root",
      "netem",
      "delay",
      "1ms",
    ])).code === 0;
  } finally {
    await run("ip", ["netns", "del", ns]);
  }
}
