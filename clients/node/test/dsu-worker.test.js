'use strict';
// Drives real `dsu worker` processes (Python) through the DsuWorker client.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { describe, it, before, after } = require('node:test');

const { DsuWorker, WorkerError } = require('..');
const { workerCommand, workerOptions, tempDir, writeNoiseWav } = require('./helpers');

const dir = tempDir();
const modelsDir = path.join(dir, 'models');
fs.mkdirSync(modelsDir);
const shortWav = writeNoiseWav(path.join(dir, 'short.wav'), 1.0);
const longWav = writeNoiseWav(path.join(dir, 'long.wav'), 120.0);
// hpss with 8 shifts over 120 s: tens of seconds of work, cancelled long before the end.
const LONG_WORK = { model: 'hpss', shifts: 8 };

after(() => fs.rmSync(dir, { recursive: true, force: true }));

function firstProgress(worker, id, stage) {
  return new Promise((resolve) => {
    const onProgress = (event) => {
      if (event.id === id && (!stage || event.stage === stage)) {
        worker.off('progress', onProgress);
        resolve(event);
      }
    };
    worker.on('progress', onProgress);
  });
}

describe('DsuWorker', () => {
  let worker;

  before(async () => {
    worker = new DsuWorker(workerOptions({ modelsDir }));
    await worker.start();
  });

  after(async () => {
    await worker.close();
  });

  it('starts with a ready line and answers quick requests', async () => {
    assert.equal(worker.ready.status, 'ready');
    assert.equal(worker.ready.device, 'cpu');
    assert.equal(worker.ready.protocol, 1);
    const pong = await worker.request('ping');
    assert.equal(pong.status, 'pong');
    assert.match(pong.id, /^js-\d+$/);
    const models = await worker.request('list_models');
    assert.ok(models.models.includes('center'));
  });

  it('separates a file and reports progress', async () => {
    const events = [];
    const output = path.join(dir, 'out');
    const reply = await worker.request(
      'separate',
      { input: shortWav, output, model: 'center' },
      { onProgress: (event) => events.push(event) },
    );
    assert.equal(reply.status, 'done');
    assert.deepEqual(Object.keys(reply.stems).sort(), ['instrumental', 'vocals']);
    for (const file of Object.values(reply.stems)) assert.ok(fs.statSync(file).size > 44);
    assert.deepEqual(reply.files.sort(), ['instrumental.wav', 'vocals.wav']);
    assert.ok(events.length >= 1);
    for (const event of events) {
      assert.equal(event.id, reply.id);
      assert.ok(event.progress >= 0 && event.progress <= 1);
    }
  });

  it('rejects error replies with the stable code', async () => {
    await assert.rejects(worker.request('load_model', { model: 'no-such-model' }), (err) => {
      assert.ok(err instanceof WorkerError);
      assert.equal(err.code, 'model_not_found');
      assert.equal(err.reply.status, 'error');
      return true;
    });
    await assert.rejects(worker.request('separate', { output: dir }), { code: 'bad_request' });
  });

  it('answers ping during a separation and cancels it', async () => {
    const output = path.join(dir, 'cancelled');
    const { id, promise } = worker.submit('separate', { input: longWav, output, ...LONG_WORK });
    const outcome = promise.then(
      () => 'done',
      (err) => err.code,
    );
    await firstProgress(worker, id, 'separating');
    const pong = await worker.request('ping');
    assert.equal(pong.status, 'pong');
    const status = await worker.request('status');
    assert.deepEqual(status.running, { cmd: 'separate', id });
    const ack = await worker.cancel(id);
    assert.equal(ack.found, true);
    assert.equal(await outcome, 'cancelled');
    assert.deepEqual(fs.existsSync(output) ? fs.readdirSync(output) : [], []);
  });

  it('times out, cancelling the request on the worker', async () => {
    await assert.rejects(
      worker.request(
        'separate',
        { input: longWav, output: path.join(dir, 'timeout'), ...LONG_WORK },
        { timeout: 1000 },
      ),
      { code: 'timeout' },
    );
    const deadline = Date.now() + 30000;
    while ((await worker.request('status')).running !== null) {
      assert.ok(Date.now() < deadline, 'the timed-out request should have been cancelled');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });
});

describe('DsuWorker lifecycle', () => {
  it('restarts after a crash', async () => {
    const worker = new DsuWorker(workerOptions({ modelsDir }));
    try {
      await worker.start();
      const firstPid = worker.proc.pid;
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      const pending = worker.request('separate', {
        input: longWav,
        output: path.join(dir, 'crash'),
        ...LONG_WORK,
      });
      const rejected = assert.rejects(pending, { code: 'worker_exited' });
      await new Promise((resolve) => setTimeout(resolve, 200));
      worker.proc.kill('SIGKILL');
      await rejected;
      await exited;
      const pong = await worker.request('ping');
      assert.equal(pong.status, 'pong');
      assert.notEqual(worker.proc.pid, firstPid);
      assert.equal(worker.restarts, 1);
    } finally {
      await worker.close();
    }
  });

  it('closes with exit code 0', async () => {
    const worker = new DsuWorker(workerOptions({ modelsDir }));
    await worker.start();
    assert.equal(await worker.close(), 0);
    assert.equal(await worker.close(), null);
  });

  it('runs a launcher restricted to its families', async () => {
    const [command, args] = workerCommand('dsu-demucs');
    const worker = new DsuWorker({
      ...workerOptions({ modelsDir }),
      command,
      args: [...args, '--arch', 'demucs,center'],
    });
    try {
      const ready = await worker.start();
      assert.deepEqual(ready.architectures, ['center', 'demucs']);
      await assert.rejects(worker.request('load_model', { model: 'hpss' }), {
        code: 'model_not_found',
      });
    } finally {
      await worker.close();
    }
  });

  it('serves a seed-style client that sends no ids', async () => {
    // The seed's Node snippet: one line out, wait for a terminal status, in order.
    const options = workerOptions();
    const [command, args] = workerCommand();
    const proc = spawn(command, [...args, '--models-dir', modelsDir], {
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    const lines = [];
    let waiting = null;
    let buffer = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const message = JSON.parse(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
        if (waiting) {
          const resolve = waiting;
          waiting = null;
          resolve(message);
        } else lines.push(message);
      }
    });
    const next = () =>
      lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => (waiting = r));
    const sendAndWait = async (cmd) => {
      proc.stdin.write(`${JSON.stringify(cmd)}\n`);
      for (;;) {
        const reply = await next();
        if (['done', 'error', 'model_loaded', 'models', 'pong', 'exiting'].includes(reply.status)) {
          return reply;
        }
      }
    };
    const exited = new Promise((resolve) => proc.on('exit', resolve));
    try {
      assert.equal((await next()).status, 'ready');
      assert.equal((await sendAndWait({ cmd: 'ping' })).status, 'pong');
      assert.ok((await sendAndWait({ cmd: 'list_models' })).models.includes('hpss'));
      const loaded = await sendAndWait({ cmd: 'load_model', model: 'center' });
      assert.deepEqual([loaded.status, loaded.model], ['model_loaded', 'center']);
      const output = path.join(dir, 'seed');
      const done = await sendAndWait({ cmd: 'separate', input: shortWav, output_dir: output });
      assert.equal(done.status, 'done');
      for (const file of done.files) assert.ok(fs.existsSync(path.join(done.output_dir, file)));
      assert.deepEqual(await sendAndWait({ cmd: 'exit' }), { status: 'exiting' });
      assert.equal(await exited, 0);
    } finally {
      proc.kill('SIGKILL');
    }
  });
});
