// Runs one JSON scenario against a happy-socket server with the stock socket.io-client and
// tweetnacl, and prints {"results": [...], "events": [...]} as JSON on stdout.
//
// Input (argv[2] or stdin): {"url": "http://127.0.0.1:PORT", "path": "/v1/updates",
//   "steps": [ {op, ...}, ... ]}
// Steps (each appends one entry to "results"):
//   {op: "keypair", seed?: hex32}            -> {publicKey}            (new Ed25519 key)
//   {op: "login", challenge?: b64, badSignature?: bool, replay?: bool}
//                                            -> {status, body, challenge, signature}
//                                               (POST /v1/auth; a success keeps the token)
//   {op: "connect", auth?: object|null, useToken?: bool, transports?: [..], extraHeaders?: {..}}
//                                            -> {connected: true, id} | {connect_error: message}
//   {op: "emit", event, args?: [..], ack?: bool, timeoutMs?: n}
//                                            -> {ack: value, ackArgs: [..]} | {timeout: true}
//                                               (ack without args = only a callback)
//   {op: "wait", event, timeoutMs?: n}       -> {args: [..]} | {timeout: true}
//   {op: "http", method, path, body?, bearer?: bool}  -> {status, body}
//   {op: "disconnect"}                        -> {disconnected: true}
// "events" lists every event the sockets received: {socket: n, event, args}.
import { readFileSync } from "node:fs";
import { io } from "socket.io-client";
import nacl from "tweetnacl";

const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const fromB64 = (s) => new Uint8Array(Buffer.from(s, "base64"));

function readScenario() {
  const raw = process.argv[2] ?? readFileSync(0, "utf8");
  return JSON.parse(raw);
}

class Runner {
  constructor(scenario) {
    this.url = scenario.url;
    this.path = scenario.path ?? "/v1/updates";
    this.defaultTimeout = scenario.timeoutMs ?? 5000;
    this.keyPair = null;
    this.token = null;
    this.lastLogin = null;
    this.socket = null;
    this.sockets = [];
    this.events = [];
    this.waiters = [];
    this.cursor = {};
  }

  async keypair(step) {
    this.keyPair = step.seed
      ? nacl.sign.keyPair.fromSeed(new Uint8Array(Buffer.from(step.seed, "hex")))
      : nacl.sign.keyPair();
    return { publicKey: b64(this.keyPair.publicKey) };
  }

  async login(step) {
    let body;
    if (step.replay) {
      body = this.lastLogin;
    } else {
      if (!this.keyPair) await this.keypair({});
      const challenge = step.challenge ? fromB64(step.challenge) : nacl.randomBytes(32);
      const signature = nacl.sign.detached(challenge, this.keyPair.secretKey);
      if (step.badSignature) signature[0] ^= 0xff;
      body = {
        publicKey: b64(this.keyPair.publicKey),
        challenge: b64(challenge),
        signature: b64(signature),
      };
      this.lastLogin = body;
    }
    const answer = await this.http({ method: "POST", path: "/v1/auth", body });
    if (answer.status === 200 && answer.body && answer.body.token) this.token = answer.body.token;
    return { ...answer, challenge: body.challenge, signature: body.signature };
  }

  async http(step) {
    const headers = { "content-type": "application/json" };
    if (step.bearer) headers.authorization = `Bearer ${this.token}`;
    const response = await fetch(this.url + step.path, {
      method: step.method ?? "GET",
      headers,
      body: step.body === undefined ? undefined : JSON.stringify(step.body),
    });
    const text = await response.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { status: response.status, body };
  }

  connect(step) {
    const options = {
      path: this.path,
      transports: step.transports ?? ["websocket"],
      reconnection: false,
      timeout: step.timeoutMs ?? this.defaultTimeout,
    };
    if (step.extraHeaders) options.extraHeaders = step.extraHeaders; // e.g. a browser's Origin
    if (step.useToken) options.auth = { ...(step.auth ?? {}), token: this.token };
    else if (step.auth !== undefined) options.auth = step.auth;
    const socket = io(this.url, options);
    const index = this.sockets.length;
    this.sockets.push(socket);
    socket.onAny((event, ...args) => {
      const entry = { socket: index, event, args };
      this.events.push(entry);
      const i = this.waiters.findIndex((w) => w.event === event);
      if (i >= 0) {
        this.cursor[event] = this.events.length;
        this.waiters.splice(i, 1)[0].resolve(entry);
      }
    });
    return new Promise((resolve) => {
      socket.once("connect", () => {
        this.socket = socket;
        resolve({ connected: true, id: socket.id });
      });
      socket.once("connect_error", (err) => {
        socket.close();
        resolve({ connect_error: err.message });
      });
    });
  }

  emit(step) {
    const socket = this.socket;
    const args = step.args ?? [];
    if (step.ack === false) {
      socket.emit(step.event, ...args);
      return Promise.resolve({ emitted: true });
    }
    return new Promise((resolve) => {
      socket.timeout(step.timeoutMs ?? this.defaultTimeout).emit(step.event, ...args, (err, ...ackArgs) => {
        if (err) resolve({ timeout: true });
        else resolve({ ack: ackArgs[0], ackArgs });
      });
    });
  }

  wait(step) {
    const from = this.cursor[step.event] ?? 0;
    const hit = this.events.findIndex((e, i) => i >= from && e.event === step.event);
    if (hit >= 0) {
      this.cursor[step.event] = hit + 1;
      return Promise.resolve({ args: this.events[hit].args });
    }
    return new Promise((resolve) => {
      const waiter = {
        event: step.event,
        resolve: (entry) => {
          clearTimeout(timer);
          resolve({ args: entry.args });
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        resolve({ timeout: true });
      }, step.timeoutMs ?? this.defaultTimeout);
      this.waiters.push(waiter);
    });
  }

  async disconnect() {
    this.socket?.disconnect();
    this.socket = null;
    return { disconnected: true };
  }

  async run(steps) {
    const results = [];
    for (const step of steps) {
      const op = this[step.op];
      if (typeof op !== "function" || step.op === "run") throw new Error(`unknown op ${step.op}`);
      results.push(await op.call(this, step));
    }
    for (const socket of this.sockets) socket.close();
    return results;
  }
}

const scenario = readScenario();
const runner = new Runner(scenario);
try {
  const results = await runner.run(scenario.steps ?? []);
  process.stdout.write(JSON.stringify({ results, events: runner.events }) + "\n");
  process.exit(0);
} catch (err) {
  process.stderr.write(`scenario failed: ${err.stack ?? err}\n`);
  process.exit(1);
}
