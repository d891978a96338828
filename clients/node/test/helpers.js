'use strict';
// Shared by the tests: where Python is, and a WAV writer for inputs.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const VENV_PYTHON = path.join(REPO, '.venv', 'bin', 'python');
// A frozen runtime folder (`make test-dist`: dist/dsu): its launchers replace Python.
const RUNTIME = process.env.DSU_RUNTIME;

/** $DSU_PYTHON, else the checkout's .venv, else python3. */
function pythonPath() {
  if (process.env.DSU_PYTHON) return process.env.DSU_PYTHON;
  return fs.existsSync(VENV_PYTHON) ? VENV_PYTHON : 'python3';
}

/** [command, args] that run `dsu worker`, or a seed launcher given its name. */
function workerCommand(launcher = null) {
  if (RUNTIME) {
    if (launcher) return [path.join(RUNTIME, launcher), ['--worker']];
    return [path.join(RUNTIME, 'dsu'), ['worker']];
  }
  if (launcher) {
    const name = JSON.stringify(launcher);
    const code = `import sys; from dsu.cli.launchers import launch; sys.exit(launch(${name}))`;
    return [pythonPath(), ['-c', code, '--worker']];
  }
  return [pythonPath(), ['-m', 'dsu', 'worker']];
}

/** Options for a DsuWorker running this checkout's `dsu worker` on the CPU. */
function workerOptions(extra = {}) {
  if (RUNTIME) {
    const [command, args] = workerCommand();
    return { command, args, device: 'cpu', ...extra };
  }
  const src = path.join(REPO, 'src');
  const pythonPathEnv = [src, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);
  return {
    python: pythonPath(),
    device: 'cpu',
    env: { PYTHONPATH: pythonPathEnv },
    ...extra,
  };
}

function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'dsu-node-'));
}

/** Write `seconds` of stereo 16-bit noise with a shared centre component. */
function writeNoiseWav(file, seconds, sampleRate = 44100) {
  const frames = Math.round(seconds * sampleRate);
  const data = Buffer.alloc(frames * 4);
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff - 0.5;
  };
  for (let i = 0; i < frames; i += 1) {
    const centre = rand();
    data.writeInt16LE(Math.round((centre + 0.3 * rand()) * 6000), i * 4);
    data.writeInt16LE(Math.round((centre + 0.3 * rand()) * 6000), i * 4 + 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(2, 22);
  header.writeUInt32LE(sampleRate, 24);
  header.writeUInt32LE(sampleRate * 4, 28);
  header.writeUInt16LE(4, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  fs.writeFileSync(file, Buffer.concat([header, data]));
  return file;
}

module.exports = { REPO, pythonPath, workerCommand, workerOptions, tempDir, writeNoiseWav };
