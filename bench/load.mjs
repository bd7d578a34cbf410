// Load tool for happy-socket (and the bare relay) on the stock socket.io-client.
//
//   node bench/load.mjs '<json config>'      -> prints one JSON result line on stdout
//
// Config: {scenario, path?: "/v1/updates", durationMs?: 3000, ...scenario fields}
// Scenarios (all sockets use transports: ["websocket"]):
//   messages-flood    {senders: [{url, token, sessionId}], receiver: {url, token}, window?: 64}
//                     no acks; each sender keeps `window` messages (200-byte bodies) that the
//                     receiver has not seen yet in flight; rate = receiver deliveries/s.
//   messages-latency  same fields; one unconfirmed message per sender: send, wait until the
//                     receiver has it, send the next; p50/p99 of send -> receive.
//   metadata-seq      {url, token, sessionId}: sequential update-metadata, ops/s and p50/p99.
//   metadata-race     {url(s), token, sessionId, writers?: 8}: writers race on one session;
//                     successes/s, and the final version checked against start + successes.
//   rpc               {holder: {url, token, machineId}, caller: {url, token}, inflight?: 1}
//                     calls/s and p50/p99 with `inflight` calls outstanding.
//   v3-post           {url, token, sessionId, batch: 1|20, inflight?: 8}: POST
//                     /v3/sessions/:id/messages with `batch` new 200-byte messages each,
//                     `inflight` requests outstanding; messages/s and p50/p99 per request.
//   v3-get            {url, token, sessionId, limit?: 100}: page the whole (pre-filled) session
//                     forward with after_seq, again and again; messages/s and p50/p99 per page.
//   connect           {urls: [..], tokens: [..], count, concurrency?: 500}: open `count`
//                     sockets; prints {"ready": ..} when all are open, waits for a line on
//                     stdin, closes them and prints the result.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const cfg = JSON.parse(process.argv[2]);
const PATH = cfg.path ?? "/v1/updates";
const DURATION = cfg.durationMs ?? 3000;
const BODY = "x".repeat(200);
const now = () => performance.now();

function connect(url, auth, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const socket = io(url, {
      path: PATH,
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: timeoutMs,
      auth,
    });
    const timer = setTimeout(() => reject(new Error(`connect timeout ${url}`)), timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(new Error(`connect_error ${err.message}`));
    });
  });
}

function emitAck(socket, event, data, timeoutMs = 30000) {
  return socket.timeout(timeoutMs).emitWithAck(event, data);
}

function pct(samples, p) {
  if (!samples.length) return null;
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function stats(samples) {
  const r = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
  return { n: samples.length, p50Ms: r(pct(samples, 50)), p99Ms: r(pct(samples, 99)) };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function messageSockets() {
  const receiver = await connect(cfg.receiver.url, { token: cfg.receiver.token, clientType: "user-scoped" });
  const senders = [];
  for (const s of cfg.senders) {
    senders.push(await connect(s.url, { token: s.token, clientType: "session-scoped", sessionId: s.sessionId }));
  }
  await sleep(200); // let cross-process room joins settle
  return { receiver, senders };
}

async function messagesFlood() {
  // No acks asked (as stock clients send `message`): each sender keeps `window` messages that
  // the receiver has not seen yet in flight, topping up whenever the receiver gets one of its own.
  const { receiver, senders } = await messageSockets();
  const window = cfg.window ?? 64;
  const bySid = new Map();
  let received = 0, lastRecv = 0, sent = 0, stopped = false;
  const t0 = now();
  const stopAt = t0 + DURATION;
  let finish;
  const done = new Promise((r) => (finish = r));
  const pump = (lane) => {
    if (now() >= stopAt) stopped = true;
    while (!stopped && lane.outstanding < window) {
      lane.outstanding++;
      sent++;
      lane.socket.emit("message", { sid: lane.sid, message: BODY, localId: `f${lane.n++}` });
    }
    if (stopped && received === sent) finish();
  };
  senders.forEach((socket, i) => {
    const sid = cfg.senders[i].sessionId;
    bySid.set(sid, { socket, sid, outstanding: 0, n: 0 });
  });
  receiver.on("update", (u) => {
    if (u.body?.t !== "new-message") return;
    received++;
    lastRecv = now();
    const lane = bySid.get(u.body.sid);
    if (lane) {
      lane.outstanding--;
      pump(lane);
    }
  });
  for (const lane of bySid.values()) pump(lane);
  const timer = setTimeout(() => finish(), DURATION + 10000);
  await done;
  clearTimeout(timer);
  const elapsed = (lastRecv - t0) / 1000;
  for (const s of [receiver, ...senders]) s.close();
  return {
    window, sent, received, lost: sent - received, seconds: Math.round(elapsed * 1000) / 1000,
    perSecond: Math.round(received / elapsed),
  };
}

async function messagesLatency() {
  const { receiver, senders } = await messageSockets();
  const waiting = new Map();
  receiver.on("update", (u) => {
    const m = u.body?.message;
    const w = m && waiting.get(m.localId);
    if (w) {
      waiting.delete(m.localId);
      w();
    }
  });
  const samples = [];
  const stopAt = now() + DURATION;
  let errors = 0;
  await Promise.all(
    senders.map(async (socket, i) => {
      const sid = cfg.senders[i].sessionId;
      for (let n = 0; now() < stopAt; n++) {
        const localId = `l${i}-${n}-${Math.random().toString(36).slice(2, 8)}`;
        const t = now();
        const got = new Promise((r) => waiting.set(localId, r));
        socket.emit("message", { sid, message: BODY, localId }, (ack) => {
          if (ack?.result !== "success") errors++;
        });
        await Promise.race([got, sleep(10000)]);
        samples.push(now() - t);
      }
    }),
  );
  for (const s of [receiver, ...senders]) s.close();
  return { ...stats(samples), errors, perSecond: Math.round(samples.length / (DURATION / 1000)) };
}

async function currentVersion(socket, sid) {
  const ack = await emitAck(socket, "update-metadata", { sid, metadata: BODY, expectedVersion: -1 });
  if (ack?.result !== "version-mismatch") throw new Error(`probe: ${JSON.stringify(ack)}`);
  return ack.version;
}

async function metadataSeq() {
  const socket = await connect(cfg.url, { token: cfg.token, clientType: "user-scoped" });
  let version = await currentVersion(socket, cfg.sessionId);
  const start = version;
  const samples = [];
  let errors = 0;
  const t0 = now();
  while (now() - t0 < DURATION) {
    const t = now();
    const ack = await emitAck(socket, "update-metadata", { sid: cfg.sessionId, metadata: BODY, expectedVersion: version });
    samples.push(now() - t);
    if (ack?.result === "success") version = ack.version;
    else { errors++; version = ack?.version ?? version; }
  }
  const seconds = (now() - t0) / 1000;
  socket.close();
  return { ...stats(samples), errors, start, end: version, perSecond: Math.round(samples.length / seconds) };
}

async function metadataRace() {
  const urls = cfg.urls ?? [cfg.url];
  const writers = cfg.writers ?? 8;
  const sockets = [];
  for (let i = 0; i < writers; i++) {
    sockets.push(await connect(urls[i % urls.length], { token: cfg.token, clientType: "user-scoped" }));
  }
  const start = await currentVersion(sockets[0], cfg.sessionId);
  let successes = 0, mismatches = 0, errors = 0;
  const t0 = now();
  await Promise.all(
    sockets.map(async (socket) => {
      let version = start;
      while (now() - t0 < DURATION) {
        const ack = await emitAck(socket, "update-metadata", { sid: cfg.sessionId, metadata: BODY, expectedVersion: version });
        if (ack?.result === "success") { successes++; version = ack.version; }
        else if (ack?.result === "version-mismatch") { mismatches++; version = ack.version; }
        else errors++;
      }
    }),
  );
  const seconds = (now() - t0) / 1000;
  const final = await currentVersion(sockets[0], cfg.sessionId);
  for (const s of sockets) s.close();
  return {
    writers, start, final, successes, mismatches, errors,
    consistent: final === start + successes, perSecond: Math.round(successes / seconds),
  };
}

async function rpc() {
  const method = `${cfg.holder.machineId}:bench-echo`;
  const holder = await connect(cfg.holder.url, {
    token: cfg.holder.token, clientType: "machine-scoped", machineId: cfg.holder.machineId,
  });
  holder.on("rpc-request", (data, cb) => cb(data.params));
  const registered = new Promise((r) => holder.once("rpc-registered", r));
  holder.emit("rpc-register", { method });
  await registered;
  const caller = await connect(cfg.caller.url, { token: cfg.caller.token, clientType: "user-scoped" });
  await sleep(200);
  const inflight = cfg.inflight ?? 1;
  const samples = [];
  let errors = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: inflight }, async (_, lane) => {
      for (let n = 0; now() - t0 < DURATION; n++) {
        const t = now();
        const ack = await emitAck(caller, "rpc-call", { method, params: `p${lane}-${n}` });
        samples.push(now() - t);
        if (!ack?.ok || ack.result !== `p${lane}-${n}`) errors++;
      }
    }),
  );
  const seconds = (now() - t0) / 1000;
  holder.close();
  caller.close();
  return { inflight, ...stats(samples), errors, perSecond: Math.round(samples.length / seconds) };
}

async function connectMany() {
  const { urls, tokens, count } = cfg;
  const concurrency = cfg.concurrency ?? 500;
  const sockets = [];
  let next = 0, failures = 0, firstError = null;
  const t0 = now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const i = next++;
        try {
          sockets.push(await connect(urls[i % urls.length], { token: tokens[i % tokens.length], clientType: "user-scoped" }, 60000));
        } catch (err) {
          failures++;
          firstError ??= String(err.message ?? err);
        }
      }
    }),
  );
  const seconds = (now() - t0) / 1000;
  const result = { count, open: sockets.length, failures, firstError, seconds: Math.round(seconds * 1000) / 1000 };
  process.stdout.write(JSON.stringify({ ready: true, ...result }) + "\n");
  const rl = createInterface({ input: process.stdin });
  await new Promise((r) => rl.once("line", r));
  rl.close();
  for (const s of sockets) s.close();
  return result;
}

async function v3Post() {
  const batch = cfg.batch ?? 1;
  const inflight = cfg.inflight ?? 8;
  const url = `${cfg.url}/v3/sessions/${cfg.sessionId}/messages`;
  const headers = { Authorization: `Bearer ${cfg.token}`, "Content-Type": "application/json" };
  const samples = [];
  let stored = 0, errors = 0, n = 0;
  const prefix = `${process.pid}-${Date.now()}`;
  const t0 = now();
  const stopAt = t0 + DURATION;
  const lane = async () => {
    while (now() < stopAt) {
      const messages = [];
      for (let i = 0; i < batch; i++) messages.push({ localId: `${prefix}-${n++}`, content: BODY });
      const start = now();
      const reply = await fetch(url, { method: "POST", headers, body: JSON.stringify({ messages }) });
      const body = await reply.json();
      samples.push(now() - start);
      if (reply.status === 200) stored += body.messages.length;
      else errors++;
    }
  };
  await Promise.all(Array.from({ length: inflight }, lane));
  const elapsed = (now() - t0) / 1000;
  return { batch, inflight, stored, errors, seconds: Math.round(elapsed * 1000) / 1000,
    perSecond: Math.round(stored / elapsed), ...stats(samples) };
}

async function v3Get() {
  const limit = cfg.limit ?? 100;
  const headers = { Authorization: `Bearer ${cfg.token}` };
  const samples = [];
  let read = 0, errors = 0, after = 0;
  const t0 = now();
  while (now() < t0 + DURATION) {
    const start = now();
    const reply = await fetch(
      `${cfg.url}/v3/sessions/${cfg.sessionId}/messages?after_seq=${after}&limit=${limit}`,
      { headers },
    );
    const body = await reply.json();
    samples.push(now() - start);
    if (reply.status !== 200) { errors++; continue; }
    read += body.messages.length;
    after = body.hasMore ? body.messages[body.messages.length - 1].seq : 0;
  }
  const elapsed = (now() - t0) / 1000;
  return { limit, read, errors, seconds: Math.round(elapsed * 1000) / 1000,
    perSecond: Math.round(read / elapsed), ...stats(samples) };
}

const scenarios = {
  "v3-post": v3Post,
  "v3-get": v3Get,
  "messages-flood": messagesFlood,
  "messages-latency": messagesLatency,
  "metadata-seq": metadataSeq,
  "metadata-race": metadataRace,
  rpc,
  connect: connectMany,
};

try {
  const fn = scenarios[cfg.scenario];
  if (!fn) throw new Error(`unknown scenario ${cfg.scenario}`);
  const result = await fn();
  process.stdout.write(JSON.stringify({ scenario: cfg.scenario, ...result }) + "\n");
  process.exit(0);
} catch (err) {
  process.stdout.write(JSON.stringify({ scenario: cfg.scenario, error: String(err?.message ?? err) }) + "\n");
  process.exit(1);
}
