// The v3 message flows of the happy app and CLI, driven with the stock socket.io-client and
// fetch, against one or more happy-socket servers. Prints one JSON object on stdout.
//
// Input (stdin): {"mode": "flow" | "race", "token", "sid", "timeoutMs"?,
//   "appUrl", "cliUrl", "postUrls": [url, ...],
//   "batches"?: [[localId, ...], ...]   (race: each batch is POSTed concurrently)
//   "expect"?: n                        (race: new-message updates the app should get)}
// Sockets: "app" is user-scoped, "cli" is session-scoped to sid; both record every
// `update` whose body is a new-message, in arrival order: {seq (update), sid, id, mseq, localId, c}.
//
// flow: the app POSTs 5 messages, the CLI receives them; the CLI POSTs 2, the app receives
//   them; 243 more are POSTed in batches of 50; then the session is paged forward
//   (after_seq) and backward (before_seq) with limit 100.
//   Output: {appPost, cliPost, app: [...], cli: [...], forward: [pages], backward: [pages]}
// race: POST every batch at once (batch i to postUrls[i % n]), wait for `expect` updates on
//   the app socket, then page forward.  Output: {replies: [{status, body}], app, forward}
import { readFileSync } from "node:fs";
import { io } from "socket.io-client";

const input = JSON.parse(readFileSync(0, "utf8"));
const timeoutMs = input.timeoutMs ?? 20000;
const path = `/v3/sessions/${input.sid}/messages`;

function connect(url, auth) {
  const socket = io(url, { path: "/v1/updates", transports: ["websocket"], reconnection: false, auth });
  const seen = [];
  const waiters = [];
  socket.on("update", (update) => {
    const body = update.body;
    if (body.t !== "new-message") return;
    const m = body.message;
    seen.push({ seq: update.seq, sid: body.sid, id: m.id, mseq: m.seq, localId: m.localId, c: m.content.c });
    for (const w of [...waiters]) if (seen.length >= w.n) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  });
  const ready = new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
  });
  const until = (n) =>
    seen.length >= n
      ? Promise.resolve()
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`saw ${seen.length} of ${n} updates`)), timeoutMs);
          waiters.push({ n, resolve: () => { clearTimeout(timer); resolve(); } });
        });
  return { socket, seen, ready, until };
}

async function http(url, method, body) {
  const response = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${input.token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

const post = (url, localIds, prefix) =>
  http(url + path, "POST", { messages: localIds.map((localId) => ({ localId, content: `${prefix}:${localId}` })) });

async function pages(url, param, start) {
  const out = [];
  let cursor = start;
  for (;;) {
    const page = await http(`${url}${path}?${param}=${cursor}&limit=100`, "GET");
    if (page.status !== 200) throw new Error(`GET ${param}: ${JSON.stringify(page)}`);
    out.push({ seqs: page.body.messages.map((m) => m.seq), hasMore: page.body.hasMore, first: page.body.messages[0] });
    if (!page.body.hasMore) return out;
    cursor = page.body.messages.at(-1).seq;
  }
}

const range = (prefix, from, to) => Array.from({ length: to - from + 1 }, (_, i) => `${prefix}-${from + i}`);

async function flow(app, cli) {
  const [url] = input.postUrls;
  const last = input.postUrls.at(-1);
  const appPost = await post(url, range("app", 1, 5), "app");
  await cli.until(5);
  const cliPost = await post(last, range("cli", 1, 2), "cli");
  await app.until(7);
  let n = 8;
  let i = 0;
  while (n <= 250) {
    const top = Math.min(n + 49, 250);
    const reply = await post(input.postUrls[i++ % input.postUrls.length], range("fill", n, top), "fill");
    if (reply.status !== 200) throw new Error(`fill: ${JSON.stringify(reply)}`);
    n = top + 1;
  }
  await cli.until(250);
  await app.until(250);
  const forward = await pages(url, "after_seq", 0);
  const backward = await pages(last, "before_seq", 2147483647);
  return { appPost, cliPost, forward, backward };
}

async function race(app) {
  const urls = input.postUrls;
  const replies = await Promise.all(input.batches.map((ids, i) => post(urls[i % urls.length], ids, `b${i}`)));
  await app.until(input.expect);
  await new Promise((resolve) => setTimeout(resolve, 300)); // late duplicates would show up here
  return { replies, forward: await pages(urls[0], "after_seq", 0) };
}

const app = connect(input.appUrl, { token: input.token, clientType: "user-scoped" });
const cli = connect(input.cliUrl, { token: input.token, clientType: "session-scoped", sessionId: input.sid });
try {
  await Promise.all([app.ready, cli.ready]);
  const result = input.mode === "race" ? await race(app) : await flow(app, cli);
  app.socket.close();
  cli.socket.close();
  // exit once the output is flushed: a pipe takes large writes asynchronously
  process.stdout.write(JSON.stringify({ ...result, app: app.seen, cli: cli.seen }) + "\n", () =>
    process.exit(0),
  );
} catch (err) {
  process.stderr.write(`v3 client failed: ${err.stack ?? err}\n`, () => process.exit(1));
}
