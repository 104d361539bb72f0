// Protocol Buffers wire format: the subset the admin service uses.
//
// Varints (uint32, uint64, enum, bool), length-delimited fields (string,
// bytes, messages, packed repeated varints). A message schema is
// { name, fields: { field_name: [number, type, { repeated }] } } where type
// is 'string' | 'bytes' | 'uint32' | 'uint64' | 'enum' | 'bool' or another
// schema (see messages.js). uint64 values become Numbers: times and counts
// stay far below 2^53. Unknown fields are skipped, as proto3 requires.

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

const SCALAR_VARINT = new Set(['uint32', 'uint64', 'enum', 'bool']);

/** Fields by number, built once per schema. */
function byNumber(schema) {
  if (!schema.byNumber) {
    schema.byNumber = new Map();
    for (const [name, [number, type, opts]] of Object.entries(schema.fields)) {
      schema.byNumber.set(number, { name, type, repeated: Boolean(opts && opts.repeated) });
    }
  }
  return schema.byNumber;
}

/** The proto3 default of a field. */
function defaultOf(type, repeated) {
  if (repeated) return [];
  switch (type) {
    case 'string': return '';
    case 'bytes': return new Uint8Array(0);
    case 'bool': return false;
    case 'uint32': case 'uint64': case 'enum': return 0;
    default: return null;
  }
}

class Writer {
  constructor() { this.parts = []; this.length = 0; }

  byte(b) { this.push(Uint8Array.of(b)); }

  push(bytes) { this.parts.push(bytes); this.length += bytes.length; }

  varint(value) {
    let v = Number(value);
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`not a uint64: ${value}`);
    const out = [];
    while (v >= 0x80) {
      out.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    out.push(v);
    this.push(Uint8Array.from(out));
  }

  tag(number, wire) { this.varint(number * 8 + wire); }

  finish() {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) { out.set(p, at); at += p.length; }
    return out;
  }
}

function writeValue(w, number, type, value) {
  if (SCALAR_VARINT.has(type)) {
    w.tag(number, VARINT);
    w.varint(type === 'bool' ? (value ? 1 : 0) : value);
  } else if (type === 'string') {
    const bytes = textEncoder.encode(value);
    w.tag(number, LEN); w.varint(bytes.length); w.push(bytes);
  } else if (type === 'bytes') {
    w.tag(number, LEN); w.varint(value.length); w.push(value);
  } else {
    const bytes = encode(type, value);
    w.tag(number, LEN); w.varint(bytes.length); w.push(bytes);
  }
}

/** Encodes `value` (a plain object) as message `schema`. Defaults are left out. */
export function encode(schema, value = {}) {
  const w = new Writer();
  for (const [name, [number, type, opts]] of Object.entries(schema.fields)) {
    const v = value[name];
    if (v === undefined || v === null) continue;
    if (opts && opts.repeated) {
      for (const item of v) writeValue(w, number, type, item);
      continue;
    }
    const isDefault = v === '' || v === 0 || v === false || (v instanceof Uint8Array && v.length === 0);
    if (!isDefault) writeValue(w, number, type, v);
  }
  return w.finish();
}

class Reader {
  constructor(bytes) { this.bytes = bytes; this.at = 0; }

  done() { return this.at >= this.bytes.length; }

  varint() {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.bytes.length) throw new RangeError('truncated varint');
      const b = this.bytes[this.at++];
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 0x80;
    }
    throw new RangeError('varint longer than 10 bytes');
  }

  take(n) {
    if (this.at + n > this.bytes.length) throw new RangeError('truncated field');
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  skip(wire) {
    switch (wire) {
      case VARINT: this.varint(); break;
      case I64: this.take(8); break;
      case LEN: this.take(this.varint()); break;
      case I32: this.take(4); break;
      default: throw new RangeError(`unknown wire type ${wire}`);
    }
  }
}

function scalarFromVarint(type, v) {
  return type === 'bool' ? v !== 0 : v;
}

/** Decodes `bytes` as message `schema` into a plain object with every field set. */
export function decode(schema, bytes) {
  const fields = byNumber(schema);
  const out = {};
  for (const f of fields.values()) out[f.name] = defaultOf(f.type, f.repeated);
  const r = new Reader(bytes);
  while (!r.done()) {
    const key = r.varint();
    const number = Math.floor(key / 8);
    const wire = key % 8;
    const f = fields.get(number);
    if (!f) { r.skip(wire); continue; }
    let value;
    if (SCALAR_VARINT.has(f.type)) {
      if (wire === LEN && f.repeated) {
        const packed = new Reader(r.take(r.varint()));
        while (!packed.done()) out[f.name].push(scalarFromVarint(f.type, packed.varint()));
        continue;
      }
      if (wire !== VARINT) { r.skip(wire); continue; }
      value = scalarFromVarint(f.type, r.varint());
    } else {
      if (wire !== LEN) { r.skip(wire); continue; }
      const body = r.take(r.varint());
      if (f.type === 'string') value = textDecoder.decode(body);
      else if (f.type === 'bytes') value = body.slice();
      else value = decode(f.type, body);
    }
    if (f.repeated) out[f.name].push(value);
    else out[f.name] = value;
  }
  return out;
}
