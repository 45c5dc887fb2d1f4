#!/usr/bin/env node
// The BullMQ peer of queue_bench's claim+ack phase (bench/queue_vs_bullmq):
//
//   node drain.js --redis URL --jobs N --concurrency C [--timeout-s 600]
//
// A fresh BullMQ queue (a name no other run uses): N no-op jobs added with
// addBulk (chunks of 1000, removeOnComplete true), then one Worker with
// concurrency C and a no-op processor drains them. Times the drain (worker
// start -> N-th completed event) and reads the Redis server's CPU seconds
// (INFO cpu) around it. Prints one JSON line; obliterates the queue and
// deletes whatever is left under its name; exits 1 on any failure.
'use strict';

const { performance } = require('node:perf_hooks');
const peer = require('./common');

const ADD_CHUNK = 1000;

const DEFINITIONS =
  'A BullMQ queue + Worker (ioredis; versions in bullmq, node) on the Redis at redis. ' +
  'add_s = wall time of addBulk of all jobs (chunks of 1000, job options removeOnComplete ' +
  'true, as a throughput-minded BullMQ user adds them: a completed job is deleted at once, ' +
  'no completed set to grow). Then one Worker (autorun false, concurrency = concurrency, ' +
  'no-op async processor, every other option a BullMQ default: lock renewal, stalled ' +
  'checks, events stream) is made ready and started; drain_s = this process\'s clock from ' +
  'worker.run() to the jobs-th completed event; drain_per_s = jobs / drain_s. BullMQ moves ' +
  'a job to completed and fetches the next in one script (one round trip per job); it has ' +
  'no batch claim in its open-source edition. redis_cpu_s = Redis INFO cpu used_cpu_sys + ' +
  'used_cpu_user over the drain; client_cpu_s = process.cpuUsage() of this process over it.';

async function addJobs(queue, count) {
  for (let i = 0; i < count; i += ADD_CHUNK) {
    const chunk = [];
    for (let j = i; j < Math.min(count, i + ADD_CHUNK); j += 1) {
      chunk.push({ name: 'noop', data: { n: j }, opts: { removeOnComplete: true } });
    }
    await queue.addBulk(chunk);
  }
}

async function main() {
  const opt = peer.parseOptions('drain.js', {
    redis: {},
    jobs: { integer: true },
    concurrency: { integer: true },
    'timeout-s': { integer: true, default: 600 },
  });
  // The jobs' deadline is --timeout-s; set-up and clean-up get 60 s more.
  peer.watchdog('drain.js', opt['timeout-s'] + 60);
  const name = peer.uniqueQueueName('drain');
  const tracker = peer.outcomeTracker(opt.jobs, opt['timeout-s'] * 1000);
  const bull = peer.bullmqSetup(opt, name, async () => {}, () => tracker);
  const { redis, queue, worker, errors } = bull;

  let result;
  let failure;
  try {
    await queue.waitUntilReady();
    const a0 = performance.now();
    await addJobs(queue, opt.jobs);
    const addS = (performance.now() - a0) / 1000;
    await worker.waitUntilReady();

    const redisCpu0 = await peer.redisCpuSeconds(redis);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    worker.run().catch((err) => {
      errors.push(err);
      tracker.fail(err);
    });
    await tracker.done;
    const drainS = (tracker.lastAt - t0) / 1000;
    const clientCpuS = peer.cpuMsSince(cpu0) / 1000;
    const redisCpuS = (await peer.redisCpuSeconds(redis)) - redisCpu0;
    result = {
      bench: 'peer_drain',
      jobs: opt.jobs,
      concurrency: opt.concurrency,
      add_s: addS,
      add_per_s: opt.jobs / addS,
      drain_s: drainS,
      drain_per_s: tracker.completed / drainS,
      completed: tracker.completed,
      failed: tracker.failed,
      redis_cpu_s: redisCpuS,
      client_cpu_s: clientCpuS,
      bullmq: require('bullmq/package.json').version,
      node: process.versions.node,
      definitions: DEFINITIONS,
    };
    failure = peer.jobsFailure(tracker);
  } catch (err) {
    failure = err;
  } finally {
    const keysLeft = await peer.bullmqTeardown(bull, tracker, name);
    if (result) result.keys_left = keysLeft;
    if (!failure && keysLeft !== 0) failure = new Error(`${keysLeft} key(s) of ${name} left`);
    if (!failure && errors.length !== 0) failure = errors[0];
  }
  peer.report('drain.js', result, failure);
}

main().catch((err) => {
  process.stderr.write(`drain.js: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});
