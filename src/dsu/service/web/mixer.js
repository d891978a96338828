// A Web Audio mixer: every stem decoded into an AudioBuffer, all started at the same
// context time so they stay sample-aligned, each through its own gain for solo and mute.
//
//   stem source -> stem gain -> master gain -> speakers
//
// AudioBufferSourceNodes play once, so play() makes new ones from the current position.

const FADE = 0.01; // seconds: gain changes ramp this fast, so solo/mute do not click

export class Mixer {
  /** @param {AudioContext} context */
  constructor(context) {
    this.context = context;
    this.master = context.createGain();
    this.master.connect(context.destination);
    this.tracks = new Map();
    this.offset = 0; // seconds into the track while paused
    this.startedAt = null; // context time of position 0 while playing
    this.onended = null;
  }

  /** Decode a stem's file and add it as a track; resolve to its AudioBuffer. */
  async add(name, bytes) {
    const buffer = await this.context.decodeAudioData(bytes);
    const gain = this.context.createGain();
    gain.connect(this.master);
    this.tracks.set(name, { buffer, gain, solo: false, muted: false, source: null });
    return buffer;
  }

  get duration() {
    let longest = 0;
    for (const track of this.tracks.values()) {
      longest = Math.max(longest, track.buffer.duration);
    }
    return longest;
  }

  get playing() {
    return this.startedAt !== null;
  }

  get position() {
    if (!this.playing) {
      return this.offset;
    }
    return Math.min(this.context.currentTime - this.startedAt, this.duration);
  }

  async play() {
    if (this.playing || this.tracks.size === 0) {
      return;
    }
    await this.context.resume();
    if (this.offset >= this.duration) {
      this.offset = 0;
    }
    // A short lead so every source is scheduled before the first one starts.
    const when = this.context.currentTime + 0.05;
    let last = null;
    for (const track of this.tracks.values()) {
      const source = this.context.createBufferSource();
      source.buffer = track.buffer;
      source.connect(track.gain);
      source.start(when, Math.min(this.offset, track.buffer.duration));
      track.source = source;
      if (!last || track.buffer.duration >= last.buffer.duration) {
        last = track;
      }
    }
    this.startedAt = when - this.offset;
    const ending = last.source;
    ending.onended = () => {
      if (last.source === ending) {
        this.stopSources();
        this.offset = this.duration;
        if (this.onended) {
          this.onended();
        }
      }
    };
  }

  pause() {
    if (!this.playing) {
      return;
    }
    this.offset = this.position;
    this.stopSources();
  }

  seek(seconds) {
    const wasPlaying = this.playing;
    this.pause();
    this.offset = Math.max(0, Math.min(seconds, this.duration));
    if (wasPlaying) {
      this.play();
    }
  }

  stopSources() {
    for (const track of this.tracks.values()) {
      if (track.source) {
        track.source.onended = null;
        track.source.stop();
        track.source.disconnect();
        track.source = null;
      }
    }
    this.startedAt = null;
  }

  setSolo(name, on) {
    this.tracks.get(name).solo = on;
    this.applyGains();
  }

  setMuted(name, on) {
    this.tracks.get(name).muted = on;
    this.applyGains();
  }

  /** Whether a stem is heard: soloed when any stem is, else not muted. */
  audible(name) {
    const track = this.tracks.get(name);
    const anySolo = [...this.tracks.values()].some((t) => t.solo);
    return anySolo ? track.solo : !track.muted;
  }

  applyGains() {
    const now = this.context.currentTime;
    for (const [name, track] of this.tracks) {
      track.gain.gain.setTargetAtTime(this.audible(name) ? 1 : 0, now, FADE);
    }
  }

  close() {
    this.stopSources();
    this.tracks.clear();
    return this.context.close();
  }
}
