// js-libp2p in the lab. Roles:
//   relay {host, port}: a circuit relay v2 server on host:port (the internet router); ready {addr}
//   A, B {relay, mode, iceServers}: dial the relay, reserve a slot, ready {peerId, addrs};
//     at go, A dials B through the relay and the upgrade to a direct connection runs:
//     mode "dcutr": TCP with DCUtR (B starts it on the relayed connection, both sides dial);
//     mode "webrtc": the WebRTC transport, signalled over the relayed connection, ICE with
//     the lab's STUN server only.
// Success is a connection to the other peer that is not relayed (no limits, no /p2p-circuit)
// carrying one stream each way.
import { createLibp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { dcutr } from "@libp2p/dcutr";
import {
  circuitRelayServer,
  circuitRelayTransport,
} from "@libp2p/circuit-relay-v2";
import { multiaddr } from "@multiformats/multiaddr";
import {
  args,
  lifetime,
  next,
  Outcome,
  performance,
  send,
  stage,
  tag,
} from "./common.mjs";

const PROTOCOL = "/punchd-bench/1.0.0";
const { role, config } = args();
lifetime(config.lifetimeMs ?? 60000);

// DCUtR's own account of an attempt (the orchestrator sets DEBUG=libp2p:dcutr*): kept to say
// why no direct connection came, and its last retry ends the trial at once.
const dcutrLog = [];
let onDcutrGiveUp = () => {};
const writeStderr = process.stderr.write.bind(process.stderr);
process.stderr.write = (chunk, ...rest) => {
  for (const line of String(chunk).split("\n")) {
    const match = line.match(/libp2p:dcutr(?::error)? (.*)$/);
    if (match === null) continue;
    const text = match[1]
      .replace(/\[ Multiaddr\(.*$/, "")
      .replace(/12D3KooW\w+/g, "<peer>")
      .replace(/ - .*Error: /, ": ")
      .replace(/ on attempt \d+ of \d+/, "");
    const telling = /\bno\b|error|fail|unable|cannot|timeout/i.test(text);
    if (telling && !dcutrLog.includes(text)) dcutrLog.push(text);
    const attempt = line.match(/attempt (\d+) of (\d+)/);
    if (attempt !== null && attempt[1] === attempt[2]) {
      setTimeout(() => onDcutrGiveUp(), 0);
    }
  }
  return writeStderr(chunk, ...rest);
};
// Every address of the lab is private; let libp2p dial them.
const connectionGater = { denyDialMultiaddr: () => false };

if (role === "relay") {
  const node = await createLibp2p({
    addresses: { listen: [`/ip4/${config.host}/tcp/${config.port}`] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater,
    services: {
      identify: identify(),
      relay: circuitRelayServer({ reservations: { maxReservations: 1024 } }),
    },
  });
  send({
    type: "ready",
    addr: `/ip4/${config.host}/tcp/${config.port}/p2p/${node.peerId}`,
  });
} else {
  const webrtc = config.mode === "webrtc";
  const transports = [tcp(), circuitRelayTransport()];
  if (webrtc) {
    const { webRTC } = await import("@libp2p/webrtc");
    transports.push(webRTC({
      rtcConfiguration: {
        iceServers: config.iceServers.map((urls) => ({ urls })),
      },
    }));
  }
  const node = await createLibp2p({
    addresses: {
      listen: [
        "/ip4/0.0.0.0/tcp/0",
        "/p2p-circuit",
        ...(webrtc ? ["/webrtc"] : []),
      ],
    },
    transports,
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater,
    services: { identify: identify(), ...(webrtc ? {} : { dcutr: dcutr() }) },
  });
  const circuit = () =>
    node.getMultiaddrs().map(String).filter((a) => a.includes("/p2p-circuit"));
  const reserved = new Promise((resolve) => {
    const check = () => {
      if (circuit().length > 0) resolve();
    };
    node.addEventListener("self:peer:update", check);
    check();
  });
  stage("libp2p started");
  await node.dial(multiaddr(config.relay));
  stage("connected to the relay, waiting for a reservation");
  await reserved;
  send({
    type: "ready",
    peerId: node.peerId.toString(),
    addrs: node.getMultiaddrs().map(String),
  });

  const relayId = config.relay.split("/p2p/")[1];
  const connections = [];
  const describe = (c) => ({
    peer: c.remotePeer.toString() === relayId ? "relay" : "other",
    remote: c.remoteAddr.toString(),
    direction: c.direction,
    limited: c.limits !== undefined,
    status: c.status,
  });
  // A WebRTC connection's remoteAddr is the circuit address it was signalled through.
  const isDirect = (c) =>
    c.limits === undefined &&
    (!c.remoteAddr.toString().includes("/p2p-circuit") ||
      c.remoteAddr.toString().includes("/webrtc"));
  let outcome = null;
  let other = null;
  const detail = () => ({
    dcutr: dcutrLog,
    connections: connections.map(describe),
    addrs: node.getMultiaddrs().map(String),
  });
  const remoteOf = (c) => {
    const pc = webrtc ? findPeerConnection(c) : null;
    if (pc !== null) return selectedRemote(pc);
    const opts = c.remoteAddr.toOptions?.();
    if (opts !== undefined && opts.host !== undefined) {
      return { host: opts.host, port: opts.port };
    }
    return { addr: c.remoteAddr.toString() };
  };
  const useDirect = async (c) => {
    try {
      const stream = await c.newStream(PROTOCOL);
      stream.send(new TextEncoder().encode(tag(role)));
      await stream.close();
      outcome.sent();
    } catch (error) {
      outcome.fail(`stream: ${error.message}`);
    }
  };
  await node.handle(PROTOCOL, async (stream, c) => {
    let text = "";
    for await (const chunk of stream) {
      text += new TextDecoder().decode(chunk.subarray());
    }
    if (outcome !== null && isDirect(c)) outcome.received(text, remoteOf(c));
  });
  node.addEventListener("connection:open", (event) => {
    const c = event.detail;
    connections.push(c);
    if (outcome !== null && isDirect(c) && c.remotePeer.toString() === other) {
      void useDirect(c);
    }
  });
  const go = await next("go");
  other = go.peer.peerId;
  outcome = new Outcome(
    performance.now(),
    detail,
    config.giveUpMs,
    () =>
      `connections to the other peer: ${
        connections.filter((c) => c.remotePeer.toString() === other).map((c) =>
          isDirect(c) ? "direct" : "relayed"
        ).join(", ") || "none"
      }`,
  );
  onDcutrGiveUp = () => {
    const offered = node.getMultiaddrs().map(String).filter((a) =>
      !a.includes("/p2p-circuit")
    )
      .map((a) => a.replace(/\/p2p\/\w+$/, ""));
    outcome.fail(
      `DCUtR gave up: ${dcutrLog.join("; ")}; this side offered ${
        offered.join(" ")
      } (no public address)`,
    );
  };
  if (role === "A") {
    const relay = config.relay;
    const target = webrtc
      ? `${relay}/p2p-circuit/webrtc/p2p/${go.peer.peerId}`
      : `${relay}/p2p-circuit/p2p/${go.peer.peerId}`;
    node.dial(multiaddr(target)).catch((error) =>
      outcome.fail(`dial: ${error.message}`)
    );
  }
}

/** The RTCPeerConnection under a libp2p WebRTC connection (found by shape: the transport keeps it private). */
function findPeerConnection(connection) {
  const seen = new Set();
  const visit = (value, depth) => {
    if (
      value === null || typeof value !== "object" || seen.has(value) ||
      depth > 4
    ) return null;
    seen.add(value);
    if (typeof value.getSelectedCandidatePair === "function") return value;
    if (value.sctp?.transport?.iceTransport?.getSelectedCandidatePair) {
      return value;
    }
    for (const key of Object.keys(value)) {
      let child;
      try {
        child = value[key];
      } catch {
        continue;
      }
      const found = visit(child, depth + 1);
      if (found !== null) return found;
    }
    return null;
  };
  return visit(connection, 0);
}

/** The remote end of the ICE pair a WebRTC peer connection selected. */
function selectedRemote(pc) {
  const pair = typeof pc.getSelectedCandidatePair === "function"
    ? pc.getSelectedCandidatePair()
    : pc.sctp.transport.iceTransport.getSelectedCandidatePair();
  const remote = pair?.remote;
  if (remote === undefined || remote === null) {
    return { addr: "no selected pair" };
  }
  return { host: remote.address, port: remote.port };
}
