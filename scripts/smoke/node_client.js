// Smoke test of the echo appliance with the Node `ws` client.
//
// usage: node node_client.js ws://HOST:PORT/path
//
// Checks that permessage-deflate is negotiated (the client offers it by default), then text,
// binary, 1 MiB of compressible JSON and of random bytes, ping/pong, 50 concurrent sessions and
// the close handshake.
'use strict';
const crypto = require('crypto');
const WebSocket = require('ws');

const url = process.argv[2];
if (!url) {
  console.error('usage: node node_client.js ws://HOST:PORT/path');
  process.exit(2);
}

// Opens a session whose messages are queued, so each `next()` takes the next one in order.
function open(u) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(u, { maxPayload: 64 << 20 });
    ws.inbox = [];
    ws.waiters = [];
    ws.on('message', (data, isBinary) => {
      const m = { data, isBinary };
      const w = ws.waiters.shift();
      if (w) w.resolve(m);
      else ws.inbox.push(m);
    });
    ws.on('error', (e) => ws.waiters.splice(0).forEach((w) => w.reject(e)));
    ws.on('close', () => ws.waiters.splice(0).forEach((w) => w.reject(new Error('closed while waiting'))));
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function next(ws) {
  if (ws.inbox.length) return Promise.resolve(ws.inbox.shift());
  return new Promise((resolve, reject) => ws.waiters.push({ resolve, reject }));
}

function assert(cond, what) {
  if (!cond) throw new Error(what);
}

async function session(n) {
  const ws = await open(url);
  for (let i = 0; i < 20; i++) {
    const msg = `session ${n} message ${i} κόσμε`;
    ws.send(msg);
    const { data, isBinary } = await next(ws);
    assert(!isBinary && data.toString() === msg, `echo mismatch in session ${n}`);
  }
  ws.close(1000);
}

async function main() {
  const ws = await open(url);
  const ext = ws.extensions;
  assert(ext.includes('permessage-deflate'), `permessage-deflate not negotiated: "${ext}"`);
  ws.send('hello');
  let r = await next(ws);
  assert(!r.isBinary && r.data.toString() === 'hello', 'text echo');
  const records = Array.from({ length: 12000 }, (_, i) => ({ type: 'message', user: `u${i % 97}`, seq: i }));
  const json = JSON.stringify(records);
  ws.send(json);
  r = await next(ws);
  assert(!r.isBinary && r.data.toString() === json, `${json.length}-byte JSON echo`);
  const blob = crypto.randomBytes(1000);
  ws.send(blob);
  r = await next(ws);
  assert(r.isBinary && Buffer.compare(r.data, blob) === 0, 'binary echo');
  const big = crypto.randomBytes(1 << 20);
  ws.send(big);
  r = await next(ws);
  assert(r.isBinary && Buffer.compare(r.data, big) === 0, '1 MiB echo');
  const pong = new Promise((resolve) => ws.once('pong', resolve));
  ws.ping(Buffer.from('are you there'));
  const got = await pong;
  assert(got.toString() === 'are you there', 'pong payload');
  const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  ws.close(1000, 'done');
  const code = await closed;
  assert(code === 1000, `close code ${code}`);
  await Promise.all(Array.from({ length: 50 }, (_, n) => session(n)));
  console.log('node ws smoke: ok (permessage-deflate, text, binary, JSON and 1 MiB, ping, 50 concurrent, close)');
}

const timer = setTimeout(() => {
  console.error('node ws smoke: FAILED: timed out after 60 s');
  process.exit(1);
}, 60000);
main()
  .then(() => {
    clearTimeout(timer);
  })
  .catch((e) => {
    console.error(`node ws smoke: FAILED: ${e.message}`);
    process.exit(1);
  });
