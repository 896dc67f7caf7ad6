// Lark webhook receiver built on the official Node SDK (@larksuiteoapi/node-sdk), for bench/run.sh.
// EventDispatcher with the Encrypt Key and Verification Token, plugged into http.createServer with
// the SDK's adaptDefault on PATH; the assets_update handler does nothing but return the same body the
// gateway answers, so a probe can tell a handled event from one the SDK refused (adaptDefault
// answers 200 with an empty body when the signature does not match).
//
// Env: PORT (required), KEY, TOKEN, PATH_ (default /webhook/event), WORKERS (default 1: one process;
// N > 1: node:cluster primary forking N workers sharing the listener), HOST (default 127.0.0.1),
// LARK_LOG_LEVEL (the SDK's logger level, default error; warn shows every refused event).
// Run from a folder whose node_modules holds the SDK (NODE_PATH works too).
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.env.PORT);
const host = process.env.HOST || '127.0.0.1';
const path = process.env.PATH_ || '/webhook/event';
const workers = Number(process.env.WORKERS || '1');
if (!port) {
  console.error('PORT is required');
  process.exit(2);
}

if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (w, code, signal) => {
    console.error(`worker ${w.process.pid} exited (${signal || code})`);
  });
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const lark = require('@larksuiteoapi/node-sdk');
  const dispatcher = new lark.EventDispatcher({
    encryptKey: process.env.KEY || '',
    verificationToken: process.env.TOKEN || '',
    // LARK_LOG_LEVEL=warn makes the SDK log every event it refuses ("verification failed event").
    loggerLevel: lark.LoggerLevel[process.env.LARK_LOG_LEVEL || 'error'],
  }).register({
    'hire.referral_account.assets_update_v1': async () => ({ msg: 'success' }),
  });
  const server = http.createServer(lark.adaptDefault(path, dispatcher, { autoChallenge: true }));
  server.keepAliveTimeout = 60_000;
  server.listen(port, host);
  process.on('SIGTERM', () => process.exit(0));
}
