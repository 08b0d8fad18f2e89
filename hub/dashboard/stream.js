// The live stream in the browser: seed-002 frames (docs/protocols.md §3) over the hub's
// /api/v1/stream WebSocket. MessagePack is the vendored @msgpack/msgpack (window.MessagePack);
// zlib payloads are inflated by the browser's own DecompressionStream("deflate").

export const T = {
  ECG_DATA: 0x01, ANOMALY_ALERT: 0x02, PREDICTION_RESULT: 0x03, FEATURE_DATA: 0x04,
  HEARTBEAT: 0x10, PING: 0x11, PONG: 0x12,
  SUBSCRIBE: 0x20, UNSUBSCRIBE: 0x21, SUBSCRIPTION_ACK: 0x22,
  VERSION_CHECK: 0xfd, PROTOCOL_NEGOTIATION: 0xfe, ERROR: 0xff,
};
export const DATA_TYPES = new Set([T.ECG_DATA, T.ANOMALY_ALERT, T.PREDICTION_RESULT, T.FEATURE_DATA]);
const COMPRESSED = 0x01;
const AUTHENTICATION_FAILED = 0x202;

const CRC_TABLE = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** CRC32 (zlib's, IEEE 802.3) of a byte array, as an unsigned int. */
export function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** One frame (an ArrayBuffer) -> {version, type, flags, data}; throws on a bad frame. */
export async function decodeFrame(buffer) {
  const view = new DataView(buffer);
  const version = view.getUint8(0);
  const size = version >= 3 ? 19 : 11;
  if (buffer.byteLength < size) throw new Error(`truncated frame (${buffer.byteLength} B)`);
  const type = view.getUint8(1), flags = view.getUint8(2);
  const length = view.getUint32(3), crc = view.getUint32(7);
  const payload = new Uint8Array(buffer, size);
  if (payload.length !== length) throw new Error(`length ${length} != ${payload.length} B`);
  if (crc32(payload) !== crc) throw new Error("CRC32 mismatch");
  const body = flags & COMPRESSED ? await inflate(payload) : payload;
  return { version, type, flags, data: window.MessagePack.decode(body) };
}

/** A frame for the hub: never compressed (the client's frames are small). */
export function encodeFrame(version, type, data) {
  const payload = window.MessagePack.encode(data);
  const size = version >= 3 ? 19 : 11;
  const frame = new Uint8Array(size + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, version); view.setUint8(1, type); view.setUint8(2, 0);
  view.setUint32(3, payload.length); view.setUint32(7, crc32(payload));
  if (version >= 3) view.setBigUint64(11, BigInt(Date.now()) * 1000n);
  frame.set(payload, size);
  return frame;
}

/**
 * A connection that negotiates, authenticates in VERSION_CHECK (browsers cannot set
 * headers on a WebSocket), subscribes to `topics` and calls `onData(payload, frame)` for each
 * data frame, in order. `onState(state, detail)`: "connecting", "live", "refused" (bad key:
 * no retry), "closed" (retried after 2 s). `onDropped(total)`: the hub skipped this page
 * ahead (it read too slowly) and says so in a HEARTBEAT: what the skipped frames carried
 * must be read again (the fleet's REST snapshot), or a device stays as its last frame left it.
 */
export class Stream {
  constructor({ apiKey, topics, onData, onState, onDropped = () => {} }) {
    Object.assign(this, { apiKey, topics, onData, onState, onDropped });
    this.dropped = 0; // the session's total so far, as the hub's HEARTBEATs count it
    this.version = 1;
    this.stopped = false;
    this.frames = 0;
    this.refused = 0;
  }

  open() {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/stream`;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.onState("connecting");
    let chain = Promise.resolve(); // frames are handled one by one, in arrival order
    ws.onmessage = (event) => {
      chain = chain.then(() => this.handle(event.data)).catch((err) => {
        this.refused += 1;
        console.warn("stream frame refused:", err);
      });
    };
    ws.onclose = (event) => {
      if (this.stopped || this.ws !== ws) return;
      if (event.code === 1008 && this.authFailed) return;
      this.onState("closed", event.reason || `code ${event.code}`);
      setTimeout(() => this.stopped || this.open(), 2000);
    };
  }

  close() {
    this.stopped = true;
    this.ws?.close();
  }

  send(type, data) {
    this.ws.send(encodeFrame(this.version, type, data));
  }

  async handle(buffer) {
    const frame = await decodeFrame(buffer);
    this.frames += 1;
    if (DATA_TYPES.has(frame.type)) return this.onData(frame.data, frame);
    switch (frame.type) {
      case T.PROTOCOL_NEGOTIATION:
        this.version = 1; // the reply is read by every version, so it is sent in V1
        this.send(T.VERSION_CHECK, { versions: [3, 2, 1], api_key: this.apiKey });
        break;
      case T.VERSION_CHECK:
        this.version = frame.data.version;
        this.send(T.SUBSCRIBE, { topics: this.topics });
        break;
      case T.SUBSCRIPTION_ACK:
        this.onState("live", `V${this.version}`);
        break;
      case T.PING:
        this.send(T.PONG, frame.data);
        break;
      case T.ERROR:
        if (frame.data.code === AUTHENTICATION_FAILED) {
          this.authFailed = true;
          this.onState("refused", frame.data.message);
        } else {
          console.warn("stream error", frame.data);
        }
        break;
      case T.HEARTBEAT:
        if (Number.isInteger(frame.data?.dropped) && frame.data.dropped > this.dropped) {
          this.dropped = frame.data.dropped;
          this.onDropped(this.dropped);
        }
        break;
      default:
        break; // PONG
    }
  }
}
