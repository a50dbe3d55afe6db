// mentorflow's payload encryption for Node.js clients: the format of mentorflow/codec.py
// (docs/confidentiality.md), implemented with Node's own crypto.
//
// An encrypted payload has the metadata `encoding: binary/encrypted` and
// `encryption-key-id: <key id>`; its data is nonce (12 bytes) || AES-256-GCM ciphertext ||
// tag (16 bytes) of the serialized inner temporal.api.common.v1.Payload, no associated data.
// Payloads without `binary/encrypted` pass through decode unchanged.
//
// Keys are configured as in MENTORFLOW_ENCRYPTION_KEYS: "k2:BASE64 k1:BASE64", 32-byte
// keys, the first one encrypts, all of them decrypt.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import proto from '@temporalio/proto';

const ENCODING = 'binary/encrypted';
const KEY_ID = 'encryption-key-id';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

const { Payload } = proto.temporal.api.common.v1;
const text = (bytes) => Buffer.from(bytes ?? []).toString('utf8');

export class EncryptionCodec {
  /** @param {Map<string, Buffer>} keys key id → 32-byte key; the first one encrypts */
  constructor(keys) {
    if (keys.size === 0) throw new Error('no encryption keys');
    this.keys = keys;
    this.activeKeyId = keys.keys().next().value;
  }

  /** Parse "k2:BASE64 k1:BASE64"; errors name the key id, never the key. */
  static fromConfig(config, variable = 'MENTORFLOW_ENCRYPTION_KEYS') {
    const keys = new Map();
    for (const [position, entry] of config.trim().split(/\s+/).entries()) {
      const colon = entry.indexOf(':');
      if (colon < 1) throw new Error(`${variable}: entry ${position + 1} is not 'key-id:BASE64'`);
      const keyId = entry.slice(0, colon);
      const key = Buffer.from(entry.slice(colon + 1), 'base64');
      if (key.length !== 32) throw new Error(`${variable}: key '${keyId}' must decode to 32 bytes, not ${key.length}`);
      if (keys.has(keyId)) throw new Error(`${variable}: key id '${keyId}' appears twice`);
      keys.set(keyId, key);
    }
    return new EncryptionCodec(keys);
  }

  async encode(payloads) {
    return payloads.map((payload) => {
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv('aes-256-gcm', this.keys.get(this.activeKeyId), nonce);
      const inner = Payload.encode(payload).finish();
      const blob = Buffer.concat([nonce, cipher.update(inner), cipher.final(), cipher.getAuthTag()]);
      return {
        metadata: { encoding: Buffer.from(ENCODING), [KEY_ID]: Buffer.from(this.activeKeyId) },
        data: new Uint8Array(blob),
      };
    });
  }

  async decode(payloads) {
    return payloads.map((payload) => {
      if (text(payload.metadata?.encoding) !== ENCODING) return payload;
      const keyId = text(payload.metadata[KEY_ID]);
      const key = this.keys.get(keyId);
      if (!key) throw new Error(`encryption key '${keyId}' is not configured (configured: ${[...this.keys.keys()].join(', ')})`);
      const blob = Buffer.from(payload.data);
      if (blob.length < NONCE_BYTES + TAG_BYTES) throw new Error(`encrypted payload for key '${keyId}' is too short`);
      const decipher = createDecipheriv('aes-256-gcm', key, blob.subarray(0, NONCE_BYTES));
      decipher.setAuthTag(blob.subarray(blob.length - TAG_BYTES));
      const inner = Buffer.concat([decipher.update(blob.subarray(NONCE_BYTES, blob.length - TAG_BYTES)), decipher.final()]);
      return Payload.decode(inner);
    });
  }
}
