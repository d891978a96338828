'use strict';
/**
 * DsuWorker: drive a DSU worker process (`dsu worker`, `dsu-demucs --worker`, ...) from
 * Node.js over its JSON-lines protocol. No dependencies.
 *
 *   const { DsuWorker } = require('dsu-worker');
 *   const worker = new DsuWorker({ modelsDir: '/models' });
 *   await worker.start();
 *   const reply = await worker.request('separate', { input, output }, {
 *     onProgress: (event) => console.log(event.stage, event.progress),
 *   });
 *   await worker.close();
 *
 * Every request gets an automatic id, so many may be in flight; replies are matched by
 * id. An error reply rejects with a WorkerError whose `code` is the protocol's stable code;
 * a cancelled request rejects with code `cancelled`.
 * If the process dies, pending requests reject with code `worker_exited` and the next
 * request starts a fresh process.
 */

const { spawn } = require('node:child_process');
const { EventEmitter } = require('node:events');

const EVENT_STATUSES = new Set(['progress']);

class WorkerError extends Error {
  /**
   * @param {string} code protocol code (bad_request, model_not_found, ...) or a client
   *   one: worker_exited, timeout, not_started.
   * @param {string} message
   * @param {object} [reply] the reply line, when there was one
   */
  constructor(code, message, reply) {
    super(`${code}: ${message}`);
    this.name = 'WorkerError';
    this.code = code;
    this.reply = reply;
  }
}

function defaultPython() {
  return process.env.DSU_PYTHON || 'python3';
}

class DsuWorker extends EventEmitter {
  /**
   * @param {object} [options]
   * @param {string} [options.command] executable to spawn (e.g. 'dsu-demucs'); default:
   *   the Python interpreter ($DSU_PYTHON or python3) running `-m dsu worker`.
   * @param {string[]} [options.args] extra arguments (e.g. ['--worker'] for a launcher).
   * @param {string} [options.python] interpreter when no command is given.
   * @param {string} [options.modelsDir] passed as --models-dir.
   * @param {string} [options.device] passed as --device.
   * @param {object} [options.env] extra environment variables.
   * @param {string} [options.cwd] working directory.
   * @param {number} [options.startTimeout=60000] ms to wait for the ready line.
   */
  constructor(options = {}) {
    super();
    const extra = [...(options.args || [])];
    if (options.modelsDir) extra.push('--models-dir', options.modelsDir);
    if (options.device) extra.push('--device', options.device);
    if (options.command) {
      this.command = options.command;
      this.args = extra;
    } else {
      this.command = options.python || defaultPython();
      this.args = ['-m', 'dsu', 'worker', ...extra];
    }
    this.env = { ...process.env, ...(options.env || {}) };
    this.cwd = options.cwd;
    this.startTimeout = options.startTimeout ?? 60000;
    this.proc = null;
    this.ready = null;
    this.restarts = -1;
    this._starting = null;
    this._pending = new Map();
    this._nextId = 1;
  }

  /** Spawn the worker unless it runs; resolves with its ready line. */
  start() {
    if (this.proc && this.ready) return Promise.resolve(this.ready);
    if (this._starting) return this._starting;
    this._starting = new Promise((resolve, reject) => {
      const proc = spawn(this.command, this.args, {
        cwd: this.cwd,
        env: this.env,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let buffer = '';
      let stderrTail = '';
      let settled = false;
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this._starting = null;
        reject(error);
      };
      const timer = setTimeout(() => {
        fail(new WorkerError('not_started', `no ready line within ${this.startTimeout} ms`));
        proc.kill('SIGKILL');
      }, this.startTimeout);

      proc.stdout.setEncoding('utf8');
      proc.stdout.on('data', (chunk) => {
        buffer += chunk;
        let newline;
        while ((newline = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (!line.trim()) continue;
          let message;
          try {
            message = JSON.parse(line);
          } catch (err) {
            this.emit('protocolError', line);
            continue;
          }
          if (!settled) {
            if (message.status !== 'ready') {
              fail(new WorkerError('not_started', `expected ready, got ${line}`, message));
              proc.kill('SIGKILL');
              return;
            }
            settled = true;
            clearTimeout(timer);
            this.proc = proc;
            this.ready = message;
            this.restarts += 1;
            this._starting = null;
            this.emit('ready', message);
            resolve(message);
            continue;
          }
          this._route(message);
        }
      });
      proc.stderr.setEncoding('utf8');
      proc.stderr.on('data', (chunk) => {
        stderrTail = (stderrTail + chunk).slice(-4000);
        this.emit('stderr', chunk);
      });
      proc.stdin.on('error', () => {});
      proc.on('error', (err) => fail(new WorkerError('not_started', err.message)));
      proc.on('exit', (code, signal) => {
        fail(new WorkerError('not_started', `worker exited (code ${code}): ${stderrTail}`));
        if (this.proc === proc) {
          this.proc = null;
          this.ready = null;
        }
        for (const [id, pending] of this._pending) {
          if (pending.proc !== proc) continue;
          this._pending.delete(id);
          clearTimeout(pending.timer);
          pending.reject(
            new WorkerError('worker_exited', `the worker exited (code ${code}, signal ${signal})`),
          );
        }
        this.emit('exit', { code, signal });
      });
    });
    return this._starting;
  }

  _route(message) {
    this.emit('message', message);
    const pending = this._pending.get(String(message.id));
    if (!pending) return;
    if (EVENT_STATUSES.has(message.status)) {
      this.emit('progress', message);
      if (pending.onProgress) pending.onProgress(message);
      return;
    }
    this._pending.delete(String(message.id));
    clearTimeout(pending.timer);
    if (message.status === 'error' || message.status === 'cancelled') {
      const code = message.code || (message.status === 'cancelled' ? 'cancelled' : 'internal');
      pending.reject(new WorkerError(code, message.message || '', message));
    } else {
      pending.resolve(message);
    }
  }

  /**
   * Send a request without waiting: returns its id and a promise of its reply.
   * @returns {{id: string, promise: Promise<object>}}
   */
  submit(cmd, fields = {}, { timeout, onProgress } = {}) {
    const id = `js-${this._nextId++}`;
    const promise = this.start().then(
      () =>
        new Promise((resolve, reject) => {
          const proc = this.proc;
          if (!proc) {
            reject(new WorkerError('worker_exited', 'the worker exited before the request was sent'));
            return;
          }
          const pending = { resolve, reject, onProgress, proc, timer: null };
          if (timeout) {
            pending.timer = setTimeout(() => {
              if (!this._pending.has(id)) return;
              this._pending.delete(id);
              this._write({ cmd: 'cancel', target: id, id: `js-${this._nextId++}` });
              reject(new WorkerError('timeout', `no reply to ${cmd} within ${timeout} ms`));
            }, timeout);
          }
          this._pending.set(id, pending);
          this._write({ ...fields, cmd, id });
        }),
    );
    return { id, promise };
  }

  /** Send a request; resolves with its reply, rejects with a WorkerError. */
  request(cmd, fields = {}, options = {}) {
    return this.submit(cmd, fields, options).promise;
  }

  /** Ask the worker to cancel request `id`; resolves with the acknowledgement. */
  cancel(id) {
    return this.request('cancel', { target: id });
  }

  _write(message) {
    if (!this.proc) return;
    this.proc.stdin.write(`${JSON.stringify(message)}\n`);
  }

  /** Send exit, wait for the process (kill it after `timeout` ms); resolves its exit code. */
  close({ timeout = 10000 } = {}) {
    const proc = this.proc;
    if (!proc) return Promise.resolve(null);
    if (proc.exitCode !== null) return Promise.resolve(proc.exitCode);
    return new Promise((resolve) => {
      const timer = setTimeout(() => proc.kill('SIGKILL'), timeout);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
      this._write({ cmd: 'exit', id: `js-${this._nextId++}` });
      proc.stdin.end();
    });
  }
}

module.exports = { DsuWorker, WorkerError };
