// ICE with node-datachannel (libdatachannel, libjuice) in the lab. Roles A (offers, opens the
// data channel) and B (answers). Config {iceServers: ["stun:IP:PORT"]}: only the lab's STUN
// server. Descriptions and candidates travel as {"type":"signal"} lines through the
// orchestrator (trickle ICE). The peer connection (its certificate, its ICE agent) is made
// before ready, as an application would have it at hand; the clock starts at go, when A
// creates the data channel (which starts negotiation and gathering).
import nodeDataChannel from "node-datachannel";
import {
  args,
  lifetime,
  next,
  on,
  Outcome,
  performance,
  send,
  since,
  tag,
} from "./common.mjs";

const { role, config } = args();
lifetime(config.lifetimeMs ?? 60000);
nodeDataChannel.initLogger("Error", () => {});
const pc = new nodeDataChannel.PeerConnection(role, {
  iceServers: config.iceServers,
});
let t0 = performance.now();
const selected = () => {
  const pair = pc.getSelectedCandidatePair();
  return pair === null ? null : {
    local: `${pair.local.type} ${pair.local.address}:${pair.local.port}`,
    remote: `${pair.remote.type} ${pair.remote.address}:${pair.remote.port}`,
  };
};
// When each phase ended (ms after go), to tell where the time goes.
const phases = {};
const mark = (name) => {
  phases[name] ??= since(t0);
};
let outcome = null;
let described = false;
const early = [];
on("signal", ({ data }) => {
  try {
    if (data.sdp !== undefined) {
      pc.setRemoteDescription(data.sdp, data.kind);
      described = true;
      for (const c of early.splice(0)) {
        pc.addRemoteCandidate(c.candidate, c.mid);
      }
    } else if (described) pc.addRemoteCandidate(data.candidate, data.mid);
    else early.push(data);
  } catch (error) {
    outcome?.fail(`signal: ${error.message}`);
  }
});
pc.onLocalDescription((sdp, kind) =>
  send({ type: "signal", data: { sdp, kind } })
);
pc.onLocalCandidate((candidate, mid) => {
  mark(candidate.includes(" srflx ") ? "srflxCandidate" : "firstCandidate");
  send({ type: "signal", data: { candidate, mid } });
});
pc.onIceStateChange((state) => mark(`ice ${state}`));
pc.onGatheringStateChange((state) => mark(`gathering ${state}`));
pc.onStateChange((state) => {
  if (state === "failed") outcome?.fail("peer connection failed");
});
const use = (dc) => {
  mark("channel open");
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
send({ type: "ready" });
await next("go");
t0 = performance.now();
outcome = new Outcome(
  t0,
  () => ({
    selected: selected(),
    state: pc.state(),
    iceState: pc.iceState(),
    phases,
  }),
  config.giveUpMs,
  () => `ICE ${pc.iceState()}, peer connection ${pc.state()}`,
);
if (role === "A") {
  const dc = pc.createDataChannel("bench");
  dc.onOpen(() => use(dc));
} else {
  pc.onDataChannel((dc) => use(dc));
}
