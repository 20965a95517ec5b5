// Hyperswarm's DHT (hyperdht) in the lab. Roles:
//   infra  {host, port, nodes}: a bootstrap node and `nodes` more DHT nodes on host (the
//          internet router), ports port..port+nodes; prints ready {bootstrap}
//   server {bootstrap}: B, listens on a fresh key pair (announced); ready {publicKey}
//   client {bootstrap}: A, connects to the go message's publicKey
// Only the bootstrap addresses given are used (never hyperdht's public ones).
import DHT from "hyperdht";
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

const { role, config } = args();
lifetime(config.lifetimeMs ?? 60000);
if (role === "infra") {
  const bootstrap = [`${config.host}:${config.port}`];
  const nodes = [
    DHT.bootstrapper(config.port, config.host, { host: config.host }),
  ];
  await nodes[0].fullyBootstrapped();
  for (let i = 1; i <= config.nodes; i++) {
    const node = new DHT({
      bootstrap,
      host: config.host,
      port: config.port + i,
      anyPort: false,
      ephemeral: false,
      firewalled: false,
    });
    await node.fullyBootstrapped();
    nodes.push(node);
  }
  send({ type: "ready", bootstrap });
} else {
  const node = new DHT({ bootstrap: config.bootstrap });
  stage("bootstrapping");
  await node.fullyBootstrapped();
  stage("bootstrapped");
  const detail = () => ({
    firewalled: node.firewalled,
    host: node.host,
    port: node.port,
    punches: node.stats.punches,
  });
  const handle = (socket, outcome) => {
    socket.on("error", (error) => outcome.fail(error.message));
    socket.on("data", (data) => {
      const raw = socket.rawStream;
      outcome.received(data.toString(), {
        host: raw.remoteHost,
        port: raw.remotePort,
      });
    });
    // streamx's write takes no callback: the other side's receipt proves this direction.
    socket.write(Buffer.from(tag(role)));
    outcome.sent();
  };
  if (role === "server") {
    let outcome = null;
    const pending = [];
    const server = node.createServer({}, (socket) => {
      if (outcome === null) pending.push(socket);
      else handle(socket, outcome);
    });
    const keyPair = DHT.keyPair();
    stage("announcing");
    await server.listen(keyPair);
    send({
      type: "ready",
      publicKey: keyPair.publicKey.toString("hex"),
      ...detail(),
    });
    await next("go");
    outcome = new Outcome(performance.now(), detail, config.giveUpMs);
    for (const socket of pending) handle(socket, outcome);
  } else {
    send({ type: "ready", ...detail() });
    const go = await next("go");
    const outcome = new Outcome(performance.now(), detail, config.giveUpMs);
    const socket = node.connect(Buffer.from(go.peer.publicKey, "hex"));
    socket.on("open", () => handle(socket, outcome));
    socket.on("error", (error) => outcome.fail(error.message));
  }
}
