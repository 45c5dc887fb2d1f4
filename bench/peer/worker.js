#!/usr/bin/env node
// The BullMQ + dockerode peer of pipeline_bench (bench/run):
//
//   node worker.js --redis URL --docker-socket PATH --image IMAGE --jobs N --concurrency P
//                  [--timeout-s 600]      # deadline of the jobs; the process's is 60 s more
//
// A fresh BullMQ queue (a name no other run uses), one BullMQ Worker with
// concurrency P whose processor runs each job in a fresh container through
// dockerode the way pipeline_bench's raw loop and the router do: create (Cmd
// ["true"], the base image, NetworkMode none, CapDrop ALL, no-new-privileges),
// start, wait, remove. One warm-up job, then N jobs added up front. Prints one
// JSON line; removes the queue's keys and every container it made; exits 1 on
// any failure (a failed job, a key or a container left, a timeout).
'use strict';

const { performance } = require('node:perf_hooks');
const Docker = require('dockerode');
const peer = require('./common');

const ADD_CHUNK = 1000;
const ENGINE_CALL_TIMEOUT_MS = 60000; // as the raw loop's wait deadline

const DEFINITIONS =
  'A BullMQ queue + Worker (ioredis; versions in bullmq, dockerode, node) on the same Redis ' +
  'and engine as pipeline_bench. Processor per job: dockerode createContainer (Cmd ["true"], ' +
  'the base image, HostConfig NetworkMode none, CapDrop ALL, SecurityOpt no-new-privileges, ' +
  'no binds), start, wait, remove (v=1); exit code != 0 fails the job. Worker concurrency = ' +
  'parallelism; jobs added with removeOnComplete true; every other option a BullMQ default. ' +
  'One untimed warm-up job through the queue first. wall_s = this process\'s clock just ' +
  'before the first addBulk (all jobs added up front, chunks of 1000) to the last ' +
  'completed/failed event; jobs_per_s = jobs / wall_s. cpu_ms_per_job = process.cpuUsage() ' +
  'user+system of this node process over that phase / jobs; vmhwm_kb = VmHWM of this ' +
  'process at the end of the phase (peak RSS over its whole life).';

// One job's container, exactly create/start/wait/remove. A container that
// failed half-way is force-removed so that nothing is left behind.
async function runContainer(docker, image, labels) {
  const container = await docker.createContainer({
    Image: image,
    Cmd: ['true'],
    Labels: labels,
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    Tty: false,
    OpenStdin: false,
    HostConfig: {
      NetworkMode: 'none',
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      Privileged: false,
      Binds: [],
    },
    abortSignal: AbortSignal.timeout(ENGINE_CALL_TIMEOUT_MS),
  });
  let removed = false;
  try {
    await container.start({ abortSignal: AbortSignal.timeout(ENGINE_CALL_TIMEOUT_MS) });
    const waited = await container.wait({ abortSignal: AbortSignal.timeout(ENGINE_CALL_TIMEOUT_MS) });
    await container.remove({ v: true, abortSignal: AbortSignal.timeout(ENGINE_CALL_TIMEOUT_MS) });
    removed = true;
    if (waited.StatusCode !== 0) throw new Error(`container exited ${waited.StatusCode}`);
  } finally {
    if (!removed) {
      await container.remove({ v: true, force: true }).catch(() => {});
    }
  }
}

// Adds `count` no-op jobs in chunks.
async function addJobs(queue, count, first) {
  for (let i = 0; i < count; i += ADD_CHUNK) {
    const chunk = [];
    for (let j = i; j < Math.min(count, i + ADD_CHUNK); j += 1) {
      chunk.push({ name: 'job', data: { n: first + j }, opts: { removeOnComplete: true } });
    }
    await queue.addBulk(chunk);
  }
}

async function main() {
  const opt = peer.parseOptions('worker.js', {
    redis: {},
    'docker-socket': {},
    image: {},
    jobs: { integer: true },
    concurrency: { integer: true },
    'timeout-s': { integer: true, default: 600 },
  });
  // The jobs' deadline is --timeout-s; set-up and clean-up get 60 s more.
  peer.watchdog('worker.js', opt['timeout-s'] + 60);
  const name = peer.uniqueQueueName('pipeline');
  const labels = { 'warmstart.bench': 'peer', 'warmstart.bench.run': name };
  const docker = new Docker({ socketPath: opt['docker-socket'] });
  await docker.ping();
  let tracker = peer.outcomeTracker(1, opt['timeout-s'] * 1000);
  const bull = peer.bullmqSetup(
    opt,
    name,
    () => runContainer(docker, opt.image, labels),
    () => tracker,
  );
  const { queue, worker, errors } = bull;

  let result;
  let failure;
  try {
    await worker.waitUntilReady();
    await queue.waitUntilReady();
    worker.run().catch((err) => {
      errors.push(err);
      tracker.fail(err);
    });
    // Warm-up, untimed: BullMQ's scripts loaded, the engine connection open.
    await addJobs(queue, 1, -1);
    await tracker.done;
    if (tracker.failed !== 0) throw tracker.firstError;

    tracker = peer.outcomeTracker(opt.jobs, opt['timeout-s'] * 1000);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await addJobs(queue, opt.jobs, 0);
    await tracker.done;
    const cpuMs = peer.cpuMsSince(cpu0);
    const wallS = (tracker.lastAt - t0) / 1000;
    result = {
      bench: 'peer_pipeline',
      jobs: opt.jobs,
      parallelism: opt.concurrency,
      wall_s: wallS,
      jobs_per_s: opt.jobs / wallS,
      cpu_ms_per_job: cpuMs / opt.jobs,
      vmhwm_kb: peer.procStatusKb('VmHWM'),
      vmrss_kb: peer.procStatusKb('VmRSS'),
      failed: tracker.failed,
      bullmq: require('bullmq/package.json').version,
      dockerode: require('dockerode/package.json').version,
      node: process.versions.node,
      definitions: DEFINITIONS,
    };
    failure = peer.jobsFailure(tracker);
  } catch (err) {
    failure = err;
  } finally {
    const keysLeft = await peer.bullmqTeardown(bull, tracker, name);
    const left = await docker.listContainers({
      all: true,
      filters: { label: [`warmstart.bench.run=${name}`] },
    });
    for (const c of left) await docker.getContainer(c.Id).remove({ v: true, force: true });
    if (result) {
      result.keys_left = keysLeft;
      result.containers_left = left.length;
    }
    if (!failure && keysLeft !== 0) failure = new Error(`${keysLeft} key(s) of ${name} left`);
    if (!failure && left.length !== 0) failure = new Error(`${left.length} container(s) left`);
    if (!failure && errors.length !== 0) failure = errors[0];
  }
  peer.report('worker.js', result, failure);
}

main().catch((err) => {
  process.stderr.write(`worker.js: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});
