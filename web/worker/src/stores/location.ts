// Where the phone is, from the browser's geolocation (GPS on a phone). The last fix is kept
// so that a report made in a dead spot still carries a place if one was known a minute ago.
import { reactive } from 'vue';

export interface Fix {
  lat: number;
  lng: number;
  accuracy: number;
  at: number;
}

export const location_ = reactive({ last: null as Fix | null, error: '' as '' | 'denied' | 'unavailable' });

const FRESH_MS = 2 * 60 * 1000;

export function getPosition(timeoutMs = 10000): Promise<Fix | null> {
  if (!('geolocation' in navigator)) {
    location_.error = 'unavailable';
    return Promise.resolve(null);
  }
  return new Promise((resolve) => {
    navigator.geolocation.getCurrentPosition(
      (p) => {
        const fix = { lat: p.coords.latitude, lng: p.coords.longitude, accuracy: p.coords.accuracy, at: Date.now() };
        location_.last = fix;
        location_.error = '';
        resolve(fix);
      },
      (e) => {
        location_.error = e.code === e.PERMISSION_DENIED ? 'denied' : 'unavailable';
        const last = location_.last;
        resolve(last && Date.now() - last.at < FRESH_MS ? last : null);
      },
      { enableHighAccuracy: true, timeout: timeoutMs, maximumAge: 30000 },
    );
  });
}

/** Great-circle distance in metres (the server computes the same for check-ins and reports). */
export function distanceM(lat1: number, lng1: number, lat2: number, lng2: number): number {
  const r = 6371008.8;
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLng = (lng2 - lng1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLng / 2) ** 2;
  return 2 * r * Math.asin(Math.sqrt(a));
}
