// Shared helpers of the BullMQ peers (worker.js, drain.js): argument parsing,
// a unique queue name, Redis INFO figures, key clean-up, peak RSS.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const IORedis = require('ioredis');
const { Queue, Worker } = require('bullmq');

const PREFIX = 'bull'; // BullMQ's default key prefix

// Parses `--name value` options; every option is required unless it has a
// default. Exits 2 with a one-line reason on a usage error.
function parseOptions(script, spec) {
  const options = {};
  for (const name of Object.keys(spec)) options[name] = { type: 'string' };
  let values;
  try {
    ({ values } = parseArgs({ options, strict: true, allowPositionals: false }));
  } catch (e) {
    usage(script, spec, e.message);
  }
  const out = {};
  for (const [name, s] of Object.entries(spec)) {
    const raw = values[name] ?? s.default;
    if (raw === undefined) usage(script, spec, `--${name} is required`);
    if (s.integer) {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < (s.min ?? 1)) {
        usage(script, spec, `--${name} must be an integer >= ${s.min ?? 1}`);
      }
      out[name] = n;
    } else {
      out[name] = String(raw);
    }
  }
  return out;
}

function usage(script, spec, reason) {
  const parts = Object.entries(spec).map(([n, s]) =>
    s.default === undefined ? `--${n} ${n.toUpperCase()}` : `[--${n} ${s.default}]`);
  process.stderr.write(`${script}: ${reason}\nusage: node ${script} ${parts.join(' ')}\n`);
  process.exit(2);
}

// A queue name no other run uses (rounds and concurrent runs never share keys).
function uniqueQueueName(kind) {
  return `warmstart-peer-${kind}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
}

// Redis CPU seconds (user + system of the server's main process) from INFO cpu.
async function redisCpuSeconds(redis) {
  const info = await redis.info('cpu');
  const field = (name) => {
    const m = info.match(new RegExp(`^${name}:([0-9.]+)`, 'm'));
    if (!m) throw new Error(`INFO cpu has no ${name}`);
    return Number(m[1]);
  };
  return field('used_cpu_sys') + field('used_cpu_user');
}

// Every key under `pattern` (SCAN, never KEYS).
async function scanKeys(redis, pattern) {
  const keys = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

// Obliterates the queue, then deletes whatever is still under its prefix (a
// worker's stalled-check key written after the obliterate, say). Returns the
// number of keys left afterwards (0 when clean).
async function removeQueueKeys(queue, redis, prefix, name) {
  await queue.obliterate({ force: true });
  const pattern = `${prefix}:${name}:*`;
  const rest = await scanKeys(redis, pattern);
  for (let i = 0; i < rest.length; i += 500) await redis.del(...rest.slice(i, i + 500));
  return (await scanKeys(redis, pattern)).length;
}

// A field of /proc/self/status in kB (VmHWM = peak RSS, VmRSS = current).
function procStatusKb(field) {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const m = status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) : -1;
}

// User + system CPU milliseconds of this process since `since` (process.cpuUsage()).
function cpuMsSince(since) {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
}

// Counts the outcomes of `total` jobs (from the worker's events): `done`
// resolves at the last one, with `lastAt` its performance.now(); it rejects
// after `timeoutMs` (a stuck job must not hang the benchmark) or at `fail()`
// (a worker error).
function outcomeTracker(total, timeoutMs) {
  let resolveDone;
  let rejectDone;
  const done = new Promise((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  const tracker = { completed: 0, failed: 0, lastAt: 0, firstError: null, done };
  const timer = setTimeout(() => {
    rejectDone(new Error(`timed out after ${timeoutMs} ms: ${tracker.completed} completed, ` +
      `${tracker.failed} failed of ${total}`));
  }, timeoutMs);
  tracker.record = (error) => {
    if (error) {
      tracker.failed += 1;
      tracker.firstError = tracker.firstError ?? error;
    } else {
      tracker.completed += 1;
    }
    tracker.lastAt = performance.now();
    if (tracker.completed + tracker.failed === total) {
      clearTimeout(timer);
      resolveDone();
    }
  };
  tracker.fail = (error) => {
    clearTimeout(timer);
    rejectDone(error);
  };
  tracker.cancel = () => clearTimeout(timer);
  return tracker;
}

// Ends the process with status 1 after `seconds` whatever it is waiting for
// (an unreachable Redis makes ioredis retry for ever, and a clean-up can hang
// on a stuck engine); the timer does not keep the process alive.
// The BullMQ objects both peers use: a Redis client of their own (INFO, key
// clean-up), the queue, and a Worker with concurrency opt.concurrency, not yet
// running, whose outcomes go to the tracker `tracker()` returns at the time
// (worker.js swaps trackers after its warm-up job). Worker errors also land in
// the returned `errors`.
function bullmqSetup(opt, name, processor, tracker) {
  const redis = new IORedis(opt.redis, { maxRetriesPerRequest: 3 });
  const connection = { url: opt.redis };
  const queue = new Queue(name, { connection, prefix: PREFIX });
  const errors = [];
  const worker = new Worker(name, processor, {
    connection,
    prefix: PREFIX,
    concurrency: opt.concurrency,
    autorun: false,
  });
  worker.on('completed', () => tracker().record(null));
  worker.on('failed', (job, err) => tracker().record(err ?? new Error('job failed')));
  worker.on('error', (err) => {
    errors.push(err);
    tracker().fail(err);
  });
  return { redis, queue, worker, errors };
}

// Stops the tracker and the worker, removes the queue's keys and closes the
// connections of bullmqSetup(); returns how many keys were left to remove.
async function bullmqTeardown({ redis, queue, worker, errors }, tracker, name) {
  tracker.cancel();
  await worker.close().catch((err) => errors.push(err));
  const keysLeft = await removeQueueKeys(queue, redis, PREFIX, name);
  await queue.close();
  await redis.quit();
  return keysLeft;
}

// The failure of a run whose jobs were tracked by `tracker`, if any.
function jobsFailure(tracker) {
  if (tracker.failed === 0) return undefined;
  return new Error(`${tracker.failed} job(s) failed, first: ${tracker.firstError.message}`);
}

// Prints the result's JSON line (definitions last) and the failure; a failure
// makes the exit status 1.
function report(script, result, failure) {
  if (result) {
    const { definitions, ...figures } = result;
    process.stdout.write(`${JSON.stringify({ ...figures, definitions })}\n`);
  }
  if (failure) {
    process.stderr.write(`${script}: ${failure.message ?? failure}\n`);
    process.exitCode = 1;
  }
}

function watchdog(script, seconds) {
  setTimeout(() => {
    process.stderr.write(`${script}: still running after ${seconds} s, giving up\n`);
    process.exit(1);
  }, seconds * 1000).unref();
}

module.exports = {
  PREFIX,
  bullmqSetup,
  bullmqTeardown,
  jobsFailure,
  report,
  parseOptions,
  uniqueQueueName,
  redisCpuSeconds,
  scanKeys,
  removeQueueKeys,
  procStatusKb,
  cpuMsSince,
  outcomeTracker,
  watchdog,
};
