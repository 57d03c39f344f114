import { Injectable } from '@angular/core';

/**
 * Makes a ringing call noticeable: a ring tone (two-tone, 2 s on / 4 s off, synthesised with
 * WebAudio, no asset to load) and, when the tab is in the background, a system notification.
 */
@Injectable({ providedIn: 'root' })
export class RingerService {
  private ctx: AudioContext | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private notes = new Map<string, Notification>();

  /** Ask once, from a user gesture (login), so a background tab can notify later. */
  requestPermission(): void {
    if (typeof Notification !== 'undefined' && Notification.permission === 'default') {
      void Notification.requestPermission().catch(() => undefined);
    }
  }

  ring(callId: string, title: string, body: string): void {
    this.startTone();
    if (typeof document !== 'undefined' && document.visibilityState === 'hidden') {
      if (typeof Notification !== 'undefined' && Notification.permission === 'granted') {
        const note = new Notification(title, { body, tag: callId, requireInteraction: true });
        note.onclick = () => {
          window.focus();
          note.close();
        };
        this.notes.set(callId, note);
      }
    }
  }

  stop(callId: string, stillRinging: number): void {
    this.notes.get(callId)?.close();
    this.notes.delete(callId);
    if (stillRinging === 0) this.stopTone();
  }

  stopAll(): void {
    for (const note of this.notes.values()) note.close();
    this.notes.clear();
    this.stopTone();
  }

  private startTone(): void {
    if (this.timer || typeof AudioContext === 'undefined') return;
    this.ctx = new AudioContext();
    const burst = () => {
      const ctx = this.ctx;
      if (!ctx) return;
      const gain = ctx.createGain();
      gain.gain.value = 0.08;
      gain.connect(ctx.destination);
      for (const hz of [440, 480]) {
        const osc = ctx.createOscillator();
        osc.frequency.value = hz;
        osc.connect(gain);
        osc.start();
        osc.stop(ctx.currentTime + 2);
      }
    };
    burst();
    this.timer = setInterval(burst, 6000);
  }

  private stopTone(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    void this.ctx?.close().catch(() => undefined);
    this.ctx = null;
  }
}
