'use strict';
/**
 * The seed's Node.js workflow with DsuWorker: keep one warm worker, preload the model,
 * separate a batch of files on it, shut down cleanly when the app exits.
 *
 *   node example.js song.wav [more.wav ...] [--model center] [--models-dir DIR] [--out DIR]
 *
 * With the dsu-* launchers installed, a desktop app keeps one worker per family instead:
 *   new DsuWorker({ command: 'dsu-demucs', args: ['--worker'], modelsDir })
 */

const path = require('node:path');
const { DsuWorker } = require('./index');

function parseArgs(argv) {
  const options = { model: 'center', modelsDir: undefined, out: 'separated', files: [] };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === '--model') options.model = argv[++i];
    else if (argv[i] === '--models-dir') options.modelsDir = argv[++i];
    else if (argv[i] === '--out') options.out = argv[++i];
    else options.files.push(argv[i]);
  }
  return options;
}

async function batchProcess(worker, files, model, outDir) {
  // The model loads once; every later file reuses it.
  for (const file of files) {
    const output = path.join(outDir, path.parse(file).name);
    const started = Date.now();
    const result = await worker.request(
      'separate',
      { input: path.resolve(file), output: path.resolve(output), model },
      {
        onProgress: (event) =>
          process.stderr.write(`\r${path.basename(file)}: ${event.stage} ${Math.round(event.progress * 100)}%  `),
      },
    );
    process.stderr.write('\n');
    console.log(`${file}: ${Object.keys(result.stems).join(', ')} in ${Date.now() - started} ms`);
    for (const [stem, stemPath] of Object.entries(result.stems)) console.log(`  ${stem}: ${stemPath}`);
  }
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  if (!options.files.length) {
    console.error('usage: node example.js song.wav [...] [--model NAME] [--models-dir DIR] [--out DIR]');
    process.exit(2);
  }
  const worker = new DsuWorker({
    python: process.env.DSU_PYTHON,
    modelsDir: options.modelsDir,
  });
  worker.on('stderr', (text) => process.stderr.write(text));
  // Never leave a worker behind: it also exits by itself when our stdin pipe closes.
  const shutdown = () => worker.close().finally(() => process.exit(130));
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);

  const ready = await worker.start();
  console.log(`worker ready on ${ready.device} (protocol ${ready.protocol})`);
  const loaded = await worker.request('load_model', { model: options.model });
  console.log(`model ${loaded.model} loaded in ${loaded.elapsed} s: ${loaded.stems.join(', ')}`);
  try {
    await batchProcess(worker, options.files, options.model, options.out);
  } finally {
    await worker.close();
  }
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
