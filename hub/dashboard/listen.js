// Listen live to a device: seed 004 audio monitor packets from the hub's
// /api/v1/devices/<id>/listen WebSocket (the hub gets them from the edge holding the device),
// played through Web Audio (AudioContext and scheduled AudioBufferSourceNodes, which work on
// any origin).
// Where the browser can, WebCodecs' AudioDecoder decodes the Opus here. It exists only in a
// secure context (https, or http on localhost / 127.0.0.1): on http://<LAN address>:8003 the
// page asks the hub for PCM instead (?format=pcm): the hub decodes each packet and sends it
// in the same packet layout with 16-bit PCM as its data.

export const HEADER_BYTES = 15; // type u8, timestamp u32, duration u16, sequence u32, length u32 (LE)
const AUDIO = 0x02;
const CONFIG = { codec: "opus", sampleRate: 16000, numberOfChannels: 1 };
const JITTER_SECONDS = 0.12;
export const NO_AUDIO_SECONDS = 4; // listening this long with no packet: say why, plainly
export const NO_AUDIO = "No audio from this device yet: a device sends audio only while it listens to someone "
  + "speak. A text-only device (the demo devices of xiaozhi up, or \"listen detect\") never does."; // how far ahead of "now" playback starts, and restarts after a gap

/** One packet of the seed 004 layout (docs/protocols.md §4); ``data`` is Opus, or PCM. */
export function parsePacket(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < HEADER_BYTES || view.getUint8(0) !== AUDIO) throw new Error("not an audio packet");
  const length = view.getUint32(11, true);
  if (HEADER_BYTES + length !== buffer.byteLength) throw new Error("data length mismatch");
  return {
    timestamp: view.getUint32(1, true), duration: view.getUint16(5, true), sequence: view.getUint32(7, true),
    data: new Uint8Array(buffer, HEADER_BYTES, length),
  };
}

/** Why this page cannot decode Opus itself (so it asks the hub for PCM), or null when it can. */
export async function decoderProblem() {
  if (!window.isSecureContext || !("AudioDecoder" in window)) {
    return window.isSecureContext ? "this browser has no WebCodecs AudioDecoder" : "WebCodecs needs https or localhost";
  }
  const support = await AudioDecoder.isConfigSupported(CONFIG).catch(() => ({ supported: false }));
  return support.supported ? null : "this browser's WebCodecs does not decode Opus";
}

/** 16-bit little-endian PCM as Web Audio's floats. */
export function pcmSamples(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const samples = new Float32Array(bytes.byteLength >> 1);
  for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
  return samples;
}

export class Listener {
  /** @param onUpdate called with the listener whenever a figure or the state changed */
  constructor(deviceId, apiKey, onUpdate) {
    Object.assign(this, { deviceId, apiKey, onUpdate });
    this.state = "connecting";
    this.how = ""; // where the Opus is decoded, and why
    this.problem = null; // why nothing plays, if so
    this.notice = null; // NO_AUDIO while listening brought no packet
    this.packets = 0; // received
    this.lost = 0; // sequence gaps: the hub skipped ahead for a slow page
    this.decoded = 0; // frames decoded and scheduled for playback
    this.level = 0; // RMS of the last decoded frame, 0..1
    this.next = null;
    this.playAt = 0;
    this.pcmRate = null; // set when the hub sends PCM
  }

  async start() {
    const why = await decoderProblem();
    this.audio = new AudioContext();
    if (why) {
      this.how = `decoded by the hub (16-bit PCM): ${why}`;
    } else {
      this.how = "decoded in this browser (WebCodecs)";
      this.decoder = new AudioDecoder({
        output: (data) => this.play(data),
        error: (err) => { this.problem = `decoder: ${err.message}`; this.onUpdate(this); },
      });
      this.decoder.configure(CONFIG);
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const path = `/api/v1/devices/${encodeURIComponent(this.deviceId)}/listen${why ? "?format=pcm" : ""}`;
    const ws = this.ws = new WebSocket(`${scheme}://${location.host}${path}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify({ api_key: this.apiKey })); // browsers cannot set headers
    ws.onmessage = (m) => {
      if (typeof m.data === "string") this.hello(m.data);
      else this.packet(m.data);
      this.onUpdate(this);
    };
    ws.onclose = (e) => {
      this.state = e.code === 1008 ? `refused: ${e.reason}` : "stopped";
      this.close();
      this.onUpdate(this);
    };
    this.onUpdate(this);
  }

  hello(text) {
    this.state = "listening";
    clearTimeout(this.quiet);
    this.quiet = setTimeout(() => {
      if (this.state === "listening" && !this.packets) { this.notice = NO_AUDIO; this.onUpdate(this); }
    }, NO_AUDIO_SECONDS * 1000);
    const hello = JSON.parse(text);
    if (hello.format === "pcm") this.pcmRate = hello.sample_rate;
  }

  packet(buffer) {
    let p;
    try { p = parsePacket(buffer); } catch { return; }
    if (this.next !== null && p.sequence > this.next) this.lost += p.sequence - this.next;
    this.next = p.sequence + 1;
    this.packets++;
    this.notice = null;
    if (!p.data.length || !this.audio) return; // an empty packet: a loss
    if (this.pcmRate) {
      this.schedule(pcmSamples(p.data), this.pcmRate);
    } else if (this.decoder?.state === "configured") {
      this.decoder.decode(new EncodedAudioChunk({
        type: "key", timestamp: p.timestamp * 1000, duration: p.duration * 1000, data: p.data,
      }));
    }
  }

  /** WebCodecs' output: one decoded frame. */
  play(data) {
    const samples = new Float32Array(data.numberOfFrames);
    data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
    const rate = data.sampleRate;
    data.close();
    this.schedule(samples, rate);
    this.onUpdate(this);
  }

  /** Play ``samples`` right after the previous frame (JITTER_SECONDS ahead after a gap). */
  schedule(samples, rate) {
    if (!this.audio) return;
    let sum = 0;
    for (const s of samples) sum += s * s;
    this.level = samples.length ? Math.sqrt(sum / samples.length) : 0;
    const buffer = this.audio.createBuffer(1, samples.length, rate);
    buffer.copyToChannel(samples, 0);
    const source = this.audio.createBufferSource();
    source.buffer = buffer;
    source.connect(this.audio.destination);
    const now = this.audio.currentTime;
    if (this.playAt < now) this.playAt = now + JITTER_SECONDS; // first frame, or after silence
    source.start(this.playAt);
    this.playAt += buffer.duration;
    this.decoded++;
  }

  stop() {
    this.ws?.close();
    this.state = "stopped";
    this.close();
  }

  close() {
    clearTimeout(this.quiet);
    this.notice = null;
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    if (this.audio && this.audio.state !== "closed") this.audio.close();
    this.decoder = this.audio = null;
  }
}
