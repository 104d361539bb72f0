// gRPC-web over fetch, binary mode (application/grpc-web+proto): unary
// calls and server streams. A frame is one flag byte (0x00 data, 0x80
// trailers), a big-endian u32 length, then the bytes. The status comes in
// the trailers frame, or in the response headers when there is no body.

import { decode, encode } from './proto.js';

/** gRPC status codes. */
export const Code = Object.freeze({
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5,
  ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9,
  ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14,
  DATA_LOSS: 15, UNAUTHENTICATED: 16,
});
const CODE_NAMES = Object.fromEntries(Object.entries(Code).map(([k, v]) => [v, k]));

/** A call that ended with a status other than OK. */
export class GrpcError extends Error {
  constructor(code, message, metadata = {}) {
    super(message || CODE_NAMES[code] || `status ${code}`);
    this.name = 'GrpcError';
    this.code = code;
    this.metadata = metadata;
  }

  get codeName() { return CODE_NAMES[this.code] ?? `STATUS_${this.code}`; }
}

function frame(bytes) {
  const out = new Uint8Array(5 + bytes.length);
  new DataView(out.buffer).setUint32(1, bytes.length);
  out.set(bytes, 5);
  return out;
}

function percentDecode(text) {
  try { return decodeURIComponent(text); } catch { return text; }
}

/** Trailers frame text ("key: value\r\n" lines) as an object. */
function parseTrailers(bytes) {
  const out = {};
  for (const line of new TextDecoder().decode(bytes).split('\r\n')) {
    const at = line.indexOf(':');
    if (at > 0) out[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim();
  }
  return out;
}

function statusFrom(fields) {
  if (fields['grpc-status'] === undefined || fields['grpc-status'] === null) return null;
  const code = Number(fields['grpc-status']);
  if (code === Code.OK) return { ok: true };
  return { error: new GrpcError(code, percentDecode(fields['grpc-message'] ?? ''), fields) };
}

function headersObject(headers) {
  const out = {};
  headers.forEach((v, k) => { out[k.toLowerCase()] = v; });
  return out;
}

/** Splits the response body into frames as bytes arrive. */
async function* frames(body) {
  const reader = body.getReader();
  let buffer = new Uint8Array(0);
  try {
    for (;;) {
      while (buffer.length >= 5) {
        const length = new DataView(buffer.buffer, buffer.byteOffset).getUint32(1);
        if (buffer.length < 5 + length) break;
        yield { trailers: (buffer[0] & 0x80) !== 0, bytes: buffer.slice(5, 5 + length) };
        buffer = buffer.slice(5 + length);
      }
      const { done, value } = await reader.read();
      if (done) break;
      const joined = new Uint8Array(buffer.length + value.length);
      joined.set(buffer);
      joined.set(value, buffer.length);
      buffer = joined;
    }
    if (buffer.length > 0) throw new GrpcError(Code.INTERNAL, 'the response ended inside a frame');
  } finally {
    reader.releaseLock();
  }
}

async function post(path, requestBytes, { token, signal }) {
  let response;
  try {
    response = await fetch(path, {
      method: 'POST',
      headers: {
        'content-type': 'application/grpc-web+proto',
        accept: 'application/grpc-web+proto',
        'x-grpc-web': '1',
        authorization: `Bearer ${token ?? ''}`,
      },
      body: frame(requestBytes),
      signal,
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw new GrpcError(Code.CANCELLED, 'cancelled');
    throw new GrpcError(Code.UNAVAILABLE, `could not reach the server (${e && e.message})`);
  }
  if (!response.ok) {
    const text = (await response.text().catch(() => '')).slice(0, 300);
    throw new GrpcError(Code.UNAVAILABLE, `HTTP ${response.status}${text ? `: ${text}` : ''}`);
  }
  const early = statusFrom(headersObject(response.headers));
  if (early && early.error) throw early.error;
  return response;
}

/**
 * Calls a server-streaming method; yields each message. Ends when the server
 * ends the stream with OK, throws a GrpcError otherwise. `opts.onOpen` is
 * called once the server accepted the call (its headers arrived).
 */
export async function* serverStream(path, requestSchema, request, responseSchema, opts = {}) {
  const response = await post(path, encode(requestSchema, request), opts);
  const early = statusFrom(headersObject(response.headers));
  if (early && early.ok) return;
  if (opts.onOpen) opts.onOpen();
  let status = null;
  try {
    for await (const f of frames(response.body)) {
      if (f.trailers) { status = statusFrom(parseTrailers(f.bytes)); break; }
      yield decode(responseSchema, f.bytes);
    }
  } catch (e) {
    if (e instanceof GrpcError) throw e;
    if (e && e.name === 'AbortError') throw new GrpcError(Code.CANCELLED, 'cancelled');
    throw new GrpcError(Code.UNAVAILABLE, `the stream broke (${e && e.message})`);
  }
  if (!status) throw new GrpcError(Code.UNAVAILABLE, 'the stream ended without a status');
  if (status.error) throw status.error;
}

/** Calls a unary method; resolves to the decoded response. */
export async function unary(path, requestSchema, request, responseSchema, opts = {}) {
  let reply = null;
  for await (const m of serverStream(path, requestSchema, request, responseSchema, opts)) {
    reply = m;
  }
  if (!reply) throw new GrpcError(Code.INTERNAL, 'the server sent no message');
  return reply;
}
