// Waveforms on a canvas: the min and max of each pixel column of a stem, drawn once per
// frame with the part already played in a second colour.

/**
 * Column peaks of an AudioBuffer, channels mixed: Float32Array [min0, max0, min1, ...].
 * @param {AudioBuffer} buffer
 * @param {number} columns
 */
export function peaks(buffer, columns) {
  const out = new Float32Array(columns * 2);
  const channels = [];
  for (let c = 0; c < buffer.numberOfChannels; c += 1) {
    channels.push(buffer.getChannelData(c));
  }
  const perColumn = buffer.length / columns;
  for (let x = 0; x < columns; x += 1) {
    const start = Math.floor(x * perColumn);
    const end = Math.max(start + 1, Math.floor((x + 1) * perColumn));
    let lo = 0;
    let hi = 0;
    for (let i = start; i < end && i < buffer.length; i += 1) {
      let sample = 0;
      for (const data of channels) {
        sample += data[i];
      }
      sample /= channels.length;
      lo = Math.min(lo, sample);
      hi = Math.max(hi, sample);
    }
    out[2 * x] = lo;
    out[2 * x + 1] = hi;
  }
  return out;
}

function cssColor(canvas, name, fallback) {
  return getComputedStyle(canvas).getPropertyValue(name).trim() || fallback;
}

/** A stem's waveform on `canvas`; draw(fraction) shades the first `fraction` as played. */
export class Waveform {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {AudioBuffer} buffer
   */
  constructor(canvas, buffer) {
    this.canvas = canvas;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(100, Math.round(canvas.clientWidth * ratio)) || 800;
    canvas.height = Math.max(32, Math.round(canvas.clientHeight * ratio)) || 64;
    this.peaks = peaks(buffer, canvas.width);
    this.colors = {
      wave: cssColor(canvas, "--wave", "#7a8aa0"),
      played: cssColor(canvas, "--wave-played", "#2f6fde"),
      head: cssColor(canvas, "--wave-head", "#d33"),
    };
    this.muted = false;
  }

  draw(fraction) {
    const { canvas, peaks: p, colors } = this;
    const g = canvas.getContext("2d");
    const { width, height } = canvas;
    const middle = height / 2;
    const playedUpTo = Math.round(fraction * width);
    g.clearRect(0, 0, width, height);
    g.globalAlpha = this.muted ? 0.35 : 1;
    for (let x = 0; x < width; x += 1) {
      const top = middle - p[2 * x + 1] * middle;
      const bottom = middle - p[2 * x] * middle;
      g.fillStyle = x < playedUpTo ? colors.played : colors.wave;
      g.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
    g.globalAlpha = 1;
    g.fillStyle = colors.head;
    g.fillRect(Math.min(playedUpTo, width - 1), 0, 1, height);
  }

  /** The fraction of the track at a click's x position. */
  fractionAt(event) {
    const box = this.canvas.getBoundingClientRect();
    return Math.max(0, Math.min(1, (event.clientX - box.left) / box.width));
  }
}
