// Listen live to a device: seed 004 audio monitor packets from the hub's
// /api/v1/devices/<id>/listen WebSocket (the hub gets them from the edge holding the device),
// Opus decoded by the browser's WebCodecs AudioDecoder and played through Web Audio.
// WebCodecs exists only in a secure context (https, or http on localhost / 127.0.0.1): elsewhere
// the packets are still counted and the page says why nothing plays.

export const HEADER_BYTES = 15; // type u8, timestamp u32, duration u16, sequence u32, length u32 (LE)
const AUDIO = 0x02;
const CONFIG = { codec: "opus", sampleRate: 16000, numberOfChannels: 1 };
const JITTER_SECONDS = 0.12; // how far ahead of "now" playback starts, and restarts after a gap

/** One packet of the seed 004 layout (docs/protocols.md §4). */
export function parsePacket(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < HEADER_BYTES || view.getUint8(0) !== AUDIO) throw new Error("not an audio packet");
  const length = view.getUint32(11, true);
  if (HEADER_BYTES + length !== buffer.byteLength) throw new Error("data length mismatch");
  return {
    timestamp: view.getUint32(1, true), duration: view.getUint16(5, true), sequence: view.getUint32(7, true),
    opus: new Uint8Array(buffer, HEADER_BYTES, length),
  };
}

/** Why this page cannot decode Opus, or null when it can. */
export async function decoderProblem() {
  if (!window.isSecureContext) return "cannot play here: WebCodecs needs https or localhost (packets are still counted)";
  if (typeof AudioDecoder === "undefined") return "cannot play here: this browser has no WebCodecs AudioDecoder";
  const support = await AudioDecoder.isConfigSupported(CONFIG).catch(() => ({ supported: false }));
  return support.supported ? null : "cannot play here: this browser's WebCodecs does not decode Opus";
}

export class Listener {
  /** @param onUpdate called with the listener whenever a figure or the state changed */
  constructor(deviceId, apiKey, onUpdate) {
    Object.assign(this, { deviceId, apiKey, onUpdate });
    this.state = "connecting";
    this.problem = null; // why nothing plays, if so
    this.packets = 0; // received
    this.lost = 0; // sequence gaps: the hub skipped ahead for a slow page
    this.decoded = 0; // frames decoded
    this.level = 0; // RMS of the last decoded frame, 0..1
    this.next = null;
    this.playAt = 0;
  }

  async start() {
    this.problem = await decoderProblem();
    if (!this.problem) {
      this.audio = new AudioContext();
      this.decoder = new AudioDecoder({
        output: (data) => this.play(data),
        error: (err) => { this.problem = `decoder: ${err.message}`; this.onUpdate(this); },
      });
      this.decoder.configure(CONFIG);
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const path = `/api/v1/devices/${encodeURIComponent(this.deviceId)}/listen`;
    const ws = this.ws = new WebSocket(`${scheme}://${location.host}${path}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify({ api_key: this.apiKey })); // browsers cannot set headers
    ws.onmessage = (m) => {
      if (typeof m.data === "string") this.state = "listening";
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

  packet(buffer) {
    let p;
    try { p = parsePacket(buffer); } catch { return; }
    if (this.next !== null && p.sequence > this.next) this.lost += p.sequence - this.next;
    this.next = p.sequence + 1;
    this.packets++;
    if (this.decoder?.state !== "configured" || !p.opus.length) return; // an empty packet: a loss
    this.decoder.decode(new EncodedAudioChunk({
      type: "key", timestamp: p.timestamp * 1000, duration: p.duration * 1000, data: p.opus,
    }));
  }

  play(data) {
    const samples = new Float32Array(data.numberOfFrames);
    data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
    const rate = data.sampleRate;
    data.close();
    this.decoded++;
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
    this.onUpdate(this);
  }

  stop() {
    this.ws?.close();
    this.state = "stopped";
    this.close();
  }

  close() {
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    if (this.audio && this.audio.state !== "closed") this.audio.close();
    this.decoder = this.audio = null;
  }
}
