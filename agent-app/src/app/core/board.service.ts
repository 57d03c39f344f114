import { Injectable, InjectionToken, computed, inject, signal } from '@angular/core';
import { DeskService } from './desk.service';
import { MediaProblem, MediaService } from './media.service';
import { Board, BoardCall, MonitorMode, Quality, isObject, parseBoard, parseCallQuality } from './protocol';

/** A call that left the board (or that the board lists as ended): its recording can be played. */
export interface EndedCall {
  call: BoardCall;
  /** Date.now() when the board stopped showing it live. */
  endedAt: number;
  /** The last quality measured (null: none). */
  quality: Quality | null;
}

/** How many ended calls the board keeps (this session, newest first). */
export const MAX_ENDED = 20;

/** The supervisor's monitoring audio: a peer connection of its own, apart from the one of
 * the supervisor's own call (a supervisor also takes calls). */
export const MONITOR_MEDIA = new InjectionToken<MediaService>('MONITOR_MEDIA', {
  providedIn: 'root',
  factory: () => new MediaService(),
});

export interface Monitoring {
  callId: string;
  mode: MonitorMode;
}

/**
 * The supervisors' board (PROTOCOL.md §6): `board_subscribe`, then every `board` event
 * replaces it; and the one call this supervisor monitors (`monitor_call` then its own
 * `webrtc_offer`, `monitor_mode` to switch, `monitor_stop`).
 */
@Injectable({ providedIn: 'root' })
export class BoardService {
  private readonly desk = inject(DeskService);
  readonly media = inject(MONITOR_MEDIA);

  readonly board = signal<Board | null>(null);
  /** Date.now() when the board arrived: `waitingSec` ages from there. */
  readonly receivedAt = signal(0);
  readonly monitoring = signal<Monitoring | null>(null);
  /** A monitor request is on its way: the buttons wait for its answer. */
  readonly pending = signal(false);

  readonly waiting = computed(() =>
    (this.board()?.calls ?? []).filter((c) => c.state === 'queued' || c.state === 'ringing'),
  );
  readonly live = computed(() => (this.board()?.calls ?? []).filter((c) => c.state !== 'ended'));
  /** Per call, the quality most recently heard: a board's `quality` or a `call_quality`. */
  readonly qualities = signal<Record<string, Quality>>({});
  /** Calls that have ended while the board was shown, newest first. */
  readonly ended = signal<EndedCall[]>([]);

  private wanted = false;

  constructor() {
    this.desk.on('board', (p) => this.apply(p));
    this.desk.on('call_quality', (p) => {
      const q = parseCallQuality(p);
      if (!q) return;
      const { callId, ...quality } = q;
      this.qualities.update((all) => ({ ...all, [callId]: quality }));
    });
    this.desk.on('connect', () => {
      if (this.wanted) void this.fetch();
    });
    this.desk.on('webrtc_candidate', (p) => {
      if (isObject(p) && p['callId'] === this.monitoring()?.callId) this.media.addRemoteCandidate(p);
    });
    this.desk.on('call_ended', (p) => {
      if (isObject(p) && p['callId'] === this.monitoring()?.callId) this.drop();
    });
    this.desk.onStop(() => this.reset());
  }

  /** Show the board: asks now if connected, and again after every reconnect. */
  subscribe(): void {
    this.wanted = true;
    if (this.desk.connection() === 'connected') void this.fetch();
  }

  private async fetch(): Promise<void> {
    const ack = await this.desk.request('board_subscribe', {});
    if (!ack.ok) {
      this.desk.problem.set({ code: ack.error.code, message: `The board is not available: ${ack.error.message}` });
      return;
    }
    this.apply(ack);
  }

  private apply(payload: unknown): void {
    const board = parseBoard(payload);
    if (!board) return;
    this.track(board);
    this.board.set(board);
    this.receivedAt.set(Date.now());
    const m = this.monitoring();
    if (m && !board.calls.some((c) => c.callId === m.callId && c.state !== 'ended')) this.drop();
  }

  /** Before a new board replaces the last: the calls that left it (or it lists as ended)
   * go to `ended`; the qualities follow the calls still on it. */
  private track(board: Board): void {
    const before = this.qualities();
    const now = Date.now();
    const live = new Set(board.calls.filter((c) => c.state !== 'ended').map((c) => c.callId));
    const gone = [
      ...(this.board()?.calls ?? []).filter((c) => c.state !== 'ended' && !live.has(c.callId)),
      ...board.calls.filter((c) => c.state === 'ended'),
    ];
    if (this.ended().some((e) => live.has(e.call.callId))) {
      this.ended.update((list) => list.filter((e) => !live.has(e.call.callId)));
    }
    if (gone.length) {
      const known = new Set(this.ended().map((e) => e.call.callId));
      const fresh = gone
        .filter((c, i) => !known.has(c.callId) && gone.findIndex((g) => g.callId === c.callId) === i)
        .map((c) => ({ call: c, endedAt: now, quality: c.quality ?? before[c.callId] ?? null }));
      if (fresh.length) this.ended.update((list) => [...fresh, ...list].slice(0, MAX_ENDED));
    }
    const qualities: Record<string, Quality> = {};
    for (const c of board.calls) {
      if (!live.has(c.callId)) continue;
      const q = c.quality ?? before[c.callId];
      if (q) qualities[c.callId] = q;
    }
    this.qualities.set(qualities);
  }

  /** A Listen / Whisper / Barge button: the first joins the call, the next ones switch. */
  async monitor(callId: string, mode: MonitorMode): Promise<void> {
    if (this.pending()) return;
    const current = this.monitoring();
    if (current?.callId === callId) {
      if (current.mode !== mode) await this.switchMode(callId, mode);
      return;
    }
    if (current) await this.stop();
    this.pending.set(true);
    let mic: MediaStream;
    try {
      mic = await this.media.acquireMicrophone();
    } catch (e) {
      this.pending.set(false);
      const p = e instanceof MediaProblem ? e : new MediaProblem('webrtc_failed', String(e));
      this.desk.problem.set({ code: p.code, message: p.message });
      return;
    }
    const ack = await this.desk.request('monitor_call', { callId, mode });
    this.pending.set(false);
    if (!ack.ok) {
      for (const t of mic.getTracks()) t.stop();
      this.desk.problem.set({ code: ack.error.code, message: `Could not monitor the call: ${ack.error.message}` });
      return;
    }
    this.monitoring.set({ callId, mode });
    try {
      const { signal, trickle } = this.desk.peerSignalling(callId);
      await this.media.connect(mic, signal, trickle, () => this.onMediaFailed(callId));
    } catch (e) {
      const p = e instanceof MediaProblem ? e : new MediaProblem('webrtc_failed', String(e));
      this.desk.problem.set({ code: p.code, message: `Monitoring audio: ${p.message}` });
      if (this.monitoring()?.callId === callId) await this.stop();
    }
  }

  private async switchMode(callId: string, mode: MonitorMode): Promise<void> {
    this.pending.set(true);
    const ack = await this.desk.request('monitor_mode', { callId, mode });
    this.pending.set(false);
    if (ack.ok) this.monitoring.update((m) => (m?.callId === callId ? { ...m, mode } : m));
    else this.desk.problem.set({ code: ack.error.code, message: `Mode not changed: ${ack.error.message}` });
  }

  /** The Stop button: leave the call (the monitoring peer closes at once). */
  async stop(): Promise<void> {
    const m = this.monitoring();
    if (!m) return;
    this.drop();
    const ack = await this.desk.request('monitor_stop', { callId: m.callId });
    if (!ack.ok && ack.error.code !== 'not_found') {
      this.desk.problem.set({ code: ack.error.code, message: `Stop monitoring: ${ack.error.message}` });
    }
  }

  private onMediaFailed(callId: string): void {
    if (this.monitoring()?.callId !== callId) return;
    this.desk.problem.set({
      code: 'webrtc_failed',
      message: 'The monitoring audio failed. Press Stop, then Listen again.',
    });
  }

  /** The call is gone (or we left it): close the monitoring peer, nothing to tell the hub. */
  private drop(): void {
    this.monitoring.set(null);
    this.media.close();
  }

  private reset(): void {
    this.wanted = false;
    this.board.set(null);
    this.qualities.set({});
    this.ended.set([]);
    this.pending.set(false);
    this.drop();
  }
}
