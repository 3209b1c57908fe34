// A photo from the camera input, made fit to send: decoded, downscaled on a canvas so that its
// longer side is at most maxSide pixels (a phone photo of 12 MP becomes ~300 KB), encoded as
// JPEG and hashed with WebCrypto's SHA-256 -- the hash is the photo's address on the server.
export interface PreparedPhoto {
  blob: Blob;
  sha256: string;
  width: number;
  height: number;
}

/** A prepared photo as a screen holds it before saving: with an object URL to show it. */
export interface PickedPhoto {
  sha256: string;
  blob: Blob;
  url: string;
}

export const PHOTO_MAX_SIDE = 1600;
export const PHOTO_QUALITY = 0.82;

export async function sha256Hex(data: ArrayBuffer): Promise<string> {
  const d = await crypto.subtle.digest('SHA-256', data);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function decode(file: Blob): Promise<{ img: CanvasImageSource; w: number; h: number; close: () => void }> {
  if (typeof createImageBitmap === 'function') {
    // imageOrientation: the EXIF rotation of a phone photo is applied, as the worker saw it.
    const bmp = await createImageBitmap(file, { imageOrientation: 'from-image' });
    return { img: bmp, w: bmp.width, h: bmp.height, close: () => bmp.close() };
  }
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.src = url;
  await img.decode();
  return { img, w: img.naturalWidth, h: img.naturalHeight, close: () => URL.revokeObjectURL(url) };
}

export async function preparePhoto(file: Blob, maxSide = PHOTO_MAX_SIDE, quality = PHOTO_QUALITY): Promise<PreparedPhoto> {
  const src = await decode(file);
  try {
    if (!src.w || !src.h) throw new Error('empty image');
    const scale = Math.min(1, maxSide / Math.max(src.w, src.h));
    const w = Math.max(1, Math.round(src.w * scale));
    const h = Math.max(1, Math.round(src.h * scale));
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
    if (!ctx) throw new Error('no canvas');
    ctx.fillStyle = '#fff'; // a transparent PNG becomes white, not black, in JPEG
    ctx.fillRect(0, 0, w, h);
    ctx.drawImage(src.img, 0, 0, w, h);
    const blob = await new Promise<Blob>((resolve, reject) =>
      canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('encode failed'))), 'image/jpeg', quality),
    );
    return { blob, sha256: await sha256Hex(await blob.arrayBuffer()), width: w, height: h };
  } finally {
    src.close();
  }
}
