// ICE with node-datachannel (libdatachannel, libjuice) in the lab. Roles A (offers, opens the
// data channel) and B (answers). Config {iceServers: ["stun:IP:PORT"]}: only the lab's STUN
// server. Descriptions and candidates travel as {"type":"signal"} lines through the
// orchestrator (trickle ICE); the clock starts at go, before the peer connection exists.
import nodeDataChannel from "node-datachannel";
import { args, lifetime, next, on, Outcome, performance, send, tag } from "./common.mjs";

const { role, config } = args();
lifetime(config.lifetimeMs ?? 60000);
nodeDataChannel.initLogger("Error", () => {});
send({ type: "ready" });
await next("go");
const t0 = performance.now();
const pc = new nodeDataChannel.PeerConnection(role, { iceServers: config.iceServers });
const selected = () => {
  const pair = pc.getSelectedCandidatePair();
  return pair === null ? null : {
    local: `${pair.local.type} ${pair.local.address}:${pair.local.port}`,
    remote: `${pair.remote.type} ${pair.remote.address}:${pair.remote.port}`,
  };
};
const outcome = new Outcome(
  t0,
  () => ({ selected: selected(), state: pc.state(), iceState: pc.iceState() }),
);
let described = false;
const early = [];
on("signal", ({ data }) => {
  try {
    if (data.sdp !== undefined) {
      pc.setRemoteDescription(data.sdp, data.kind);
      described = true;
      for (const c of early.splice(0)) pc.addRemoteCandidate(c.candidate, c.mid);
    } else if (described) pc.addRemoteCandidate(data.candidate, data.mid);
    else early.push(data);
  } catch (error) {
    outcome.fail(`signal: ${error.message}`);
  }
});
pc.onLocalDescription((sdp, kind) => send({ type: "signal", data: { sdp, kind } }));
pc.onLocalCandidate((candidate, mid) => send({ type: "signal", data: { candidate, mid } }));
pc.onStateChange((state) => {
  if (state === "failed") outcome.fail("peer connection failed");
});
const use = (dc) => {
  dc.onMessage((message) => {
    const pair = pc.getSelectedCandidatePair();
    outcome.received(
      String(message),
      pair && { host: pair.remote.address, port: pair.remote.port },
    );
  });
  dc.sendMessage(tag(role));
  outcome.sent();
};
if (role === "A") {
  const dc = pc.createDataChannel("bench");
  dc.onOpen(() => use(dc));
} else {
  pc.onDataChannel((dc) => use(dc));
}
