// Times ONNX Runtime (CPU, all graph optimizations) on one ONNX model, in this process: one session,
// one input tensor of uniform [0, 1) values made once, session.run called back to back: untimed
// calls first (at least two and at least 0.1 s), then at least REPEATS timed calls and at least 0.2 s
// of them, as `sparrow bench` times a model. Prints one JSON line: median, min and max microseconds per call, and the
// session's load time. Usage (onnxruntime-node resolvable through NODE_PATH):
//   node bench/ort_time.js MODEL.onnx INPUT_NAME DIM,DIM,... THREADS REPEATS
const ort = require('onnxruntime-node');

async function main() {
  const [model, inputName, dimsText, threadsText, repeatsText] = process.argv.slice(2);
  const dims = dimsText.split(',').map(Number);
  const threads = Number(threadsText), repeats = Number(repeatsText);
  const loadStart = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
  const loadUs = Number(process.hrtime.bigint() - loadStart) / 1e3;
  const values = new Float32Array(dims.reduce((a, b) => a * b, 1));
  let seed = 1;
  for (let i = 0; i < values.length; ++i) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    values[i] = seed / 2147483648;
  }
  const feeds = {[inputName]: new ort.Tensor('float32', values, dims)};
  const seconds = (start) => Number(process.hrtime.bigint() - start) / 1e9;
  const warmStart = process.hrtime.bigint();
  for (let i = 0; i < 2 || seconds(warmStart) < 0.1; ++i) await session.run(feeds);
  const times = [];
  const timedStart = process.hrtime.bigint();
  while (times.length < repeats || seconds(timedStart) < 0.2) {
    const start = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - start) / 1e3);
  }
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({
    median_us: times[Math.floor(times.length / 2)], min_us: times[0], max_us: times[times.length - 1],
    load_us: loadUs, threads, dims,
  }));
}

main().catch((e) => {
  console.error(`ort_time: ${e.message}`);
  process.exit(1);
});
