/**
 * Just enough OpenPGP packet reading to list the primary-key fingerprints of armored public keys
 * synchronously, so the `openpgp` codec's spec (which a manifest records) is known before any
 * key is loaded through the async openpgp API. RFC 9580 §6 (armor), §4.2 (packet framing),
 * §5.5.4 (fingerprints). Tests compare the result with gpg's own listing.
 */
import { createHash } from "node:crypto";

export type ArmorKind = "PUBLIC KEY BLOCK" | "PRIVATE KEY BLOCK";

/** Each `-----BEGIN PGP <kind>-----` ... `-----END PGP <kind>-----` block in `text`. */
export function armoredBlocks(text: string, kind: ArmorKind): string[] {
  const pattern = new RegExp(`-----BEGIN PGP ${kind}-----[\\s\\S]*?-----END PGP ${kind}-----`, "g");
  return text.match(pattern) ?? [];
}

/** The binary content of one armored block (armor headers and the CRC line skipped). */
export function dearmor(block: string): Uint8Array {
  const lines = block.split(/\r?\n/).map((line) => line.trim());
  let i = 1;
  // Armor headers ("Comment: ...") end at the first blank line; some writers put none.
  if (lines[i]?.includes(":")) {
    while (i < lines.length && lines[i] !== "") i++;
  }
  const data: string[] = [];
  for (; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith("-----END") || line.startsWith("=")) break;
    data.push(line);
  }
  return Buffer.from(data.join(""), "base64");
}

/** Upper-case hex fingerprints of the primary keys in a binary key (ring), in order. */
export function primaryFingerprints(binary: Uint8Array): string[] {
  const fingerprints: string[] = [];
  let offset = 0;
  while (offset < binary.byteLength) {
    const first = binary[offset]!;
    if ((first & 0x80) === 0) throw new Error("not an OpenPGP packet");
    let tag: number;
    let length: number;
    let header: number;
    if (first & 0x40) {
      tag = first & 0x3f;
      const l0 = binary[offset + 1] ?? 0;
      if (l0 < 192) [length, header] = [l0, 2];
      else if (l0 < 224) [length, header] = [((l0 - 192) << 8) + (binary[offset + 2] ?? 0) + 192, 3];
      else if (l0 === 255) [length, header] = [readU32(binary, offset + 2), 6];
      else throw new Error("partial-length packet in a key");
    } else {
      tag = (first >> 2) & 0x0f;
      const type = first & 0x03;
      if (type === 0) [length, header] = [binary[offset + 1] ?? 0, 2];
      else if (type === 1) [length, header] = [((binary[offset + 1] ?? 0) << 8) | (binary[offset + 2] ?? 0), 3];
      else if (type === 2) [length, header] = [readU32(binary, offset + 1), 5];
      else [length, header] = [binary.byteLength - offset - 1, 1];
    }
    const body = binary.subarray(offset + header, offset + header + length);
    if (body.byteLength !== length) throw new Error("truncated OpenPGP packet");
    if (tag === 6) fingerprints.push(fingerprint(body));
    offset += header + length;
  }
  return fingerprints;
}

function readU32(bytes: Uint8Array, at: number): number {
  if (at + 4 > bytes.byteLength) throw new Error("truncated OpenPGP packet");
  return ((bytes[at]! << 24) >>> 0) + (bytes[at + 1]! << 16) + (bytes[at + 2]! << 8) + bytes[at + 3]!;
}

/** v4: SHA-1 over 0x99, 2-byte length, body. v5 (0x9a) and v6 (0x9b): SHA-256 with a 4-byte length. */
function fingerprint(body: Uint8Array): string {
  const version = body[0];
  if (version === 4) {
    const prefix = Buffer.from([0x99, (body.byteLength >> 8) & 0xff, body.byteLength & 0xff]);
    return createHash("sha1").update(prefix).update(body).digest("hex").toUpperCase();
  }
  if (version === 5 || version === 6) {
    const prefix = Buffer.alloc(5);
    prefix[0] = version === 6 ? 0x9b : 0x9a;
    prefix.writeUInt32BE(body.byteLength, 1);
    return createHash("sha256").update(prefix).update(body).digest("hex").toUpperCase();
  }
  throw new Error(`unsupported key version ${String(version)}`);
}
