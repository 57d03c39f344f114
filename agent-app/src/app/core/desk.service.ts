import { Injectable, OnDestroy, computed, inject, signal } from '@angular/core';
import { AuthService } from './auth.service';
import { MediaProblem, MediaService, Signal, Trickle } from './media.service';
import {
  AccountRole,
  Ack,
  AgentState,
  BotTurn,
  Briefing,
  CancelReason,
  Caller,
  IncomingCall,
  MonitorMode,
  Quality,
  Role,
  TranscriptLine,
  TransferInfo,
  isObject,
  parseAgentState,
  parseCallQuality,
  parseIncoming,
  parseMonitored,
  parseTranscript,
  str,
} from './protocol';
import { RingerService } from './ringer.service';
import { AgentSocket, SOCKET_FACTORY } from './socket';

export type Connection = 'disconnected' | 'connecting' | 'connected' | 'reconnecting';

export interface Offer extends IncomingCall {
  ringsUntil: number;
}

export interface Notice {
  id: number;
  callId: string;
  reason: CancelReason;
  caller: Caller;
  until: number;
}

export interface Line {
  role: Role;
  text: string;
  final: boolean;
  at: string;
  seq: number;
}

export interface ActiveCall {
  callId: string;
  threadId: string;
  caller: Caller;
  called: string;
  botTranscript: BotTurn[];
  /** A transferred call: what the agents before us said (§6), and who handed it over. */
  humanTranscript: TranscriptLine[];
  transfer: TransferInfo | null;
  /** The briefing the call rang with (null after a reload: the hub sends it only then). */
  summary: Briefing | null;
  acceptedAt: number;
  connectedAt: number | null;
  endedAt: number | null;
  sinceAt: string;
  state: 'connecting' | 'connected' | 'ended';
  muted: boolean;
  lines: Line[];
  interim: Partial<Record<Role, Line>>;
  ended: { reason: string; by: string } | null;
  /** `call_monitored`: how a supervisor is on this call now (null: nobody). */
  monitor: MonitorMode | null;
  /** The latest `call_quality` (null until the first; the last one stays after the end). */
  quality: Quality | null;
}

export interface HistoryItem {
  callId: string;
  threadId: string;
  caller: Caller;
  at: number;
  seconds: number;
  outcome: string;
}

export interface Problem {
  code: string;
  message: string;
}

export const NOTICE_TEXT: Record<CancelReason, string> = {
  answered_elsewhere: 'Answered elsewhere',
  caller_hangup: 'The caller hung up',
  ring_timeout: 'Not answered in time',
  declined: 'Declined',
};

const ACK_TIMEOUT_MS = 8000;
const NOTICE_MS = 10000;
const MAX_MEDIA_RETRIES = 3;

export function endReasonText(reason: string, by: string): string {
  const who = by === 'caller' ? 'the caller' : by === 'agent' ? 'you' : 'the system';
  const why: Record<string, string> = {
    returned_to_bot: 'Returned to the bot',
    transferred: 'Transferred: the other agent has the call now',
    connection_lost: 'The call was lost while the connection was down',
  };
  return why[reason] ?? `Call ended by ${who}${reason && reason !== 'hangup' ? ` (${reason.replace(/_/g, ' ')})` : ''}`;
}

/** A call the agent has just taken (or a reload restores): connecting, nothing said yet. */
function newCall(
  callId: string,
  from: {
    threadId: string;
    caller: Caller;
    called: string;
    botTranscript: BotTurn[];
    humanTranscript?: TranscriptLine[];
    transfer?: TransferInfo | null;
    summary?: Briefing | null;
  },
): ActiveCall {
  const now = Date.now();
  return {
    callId,
    threadId: from.threadId,
    caller: from.caller,
    called: from.called,
    botTranscript: from.botTranscript,
    humanTranscript: from.humanTranscript ?? [],
    transfer: from.transfer ?? null,
    summary: from.summary ?? null,
    acceptedAt: now,
    connectedAt: null,
    endedAt: null,
    sinceAt: new Date(now).toISOString(),
    state: 'connecting',
    muted: false,
    lines: [],
    interim: {},
    ended: null,
    monitor: null,
    quality: null,
  };
}

type Listener = (payload: unknown) => void;

/**
 * The agent's desk: one Socket.IO connection to the hub's /agent namespace (PROTOCOL.md §1)
 * and everything the screens show, as signals. The socket reconnects by itself; on reconnect
 * the hub's `agent_state` says which call is still ours and the view is restored from it.
 */
@Injectable({ providedIn: 'root' })
export class DeskService implements OnDestroy {
  private readonly factory = inject(SOCKET_FACTORY);
  private readonly auth = inject(AuthService);
  readonly media = inject(MediaService);
  private readonly ringer = inject(RingerService);

  readonly connection = signal<Connection>('disconnected');
  readonly me = signal<AgentState | null>(null);
  readonly offers = signal<Offer[]>([]);
  readonly notices = signal<Notice[]>([]);
  readonly call = signal<ActiveCall | null>(null);
  readonly history = signal<HistoryItem[]>([]);
  readonly problem = signal<Problem | null>(null);
  readonly now = signal(Date.now());
  readonly busy = signal(false);

  readonly available = computed(() => this.me()?.status !== 'away');
  readonly role = computed<AccountRole>(() => this.me()?.role ?? 'agent');
  /** §6: supervisors and admins see the board and may monitor calls. */
  readonly supervises = computed(() => this.role() !== 'agent');
  readonly inCall = computed(() => {
    const c = this.call();
    return c !== null && c.state !== 'ended';
  });

  private socket: AgentSocket | null = null;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private noticeSeq = 0;
  private mediaRetries = 0;
  private readonly listeners: [string, Listener][] = [];
  private readonly stopHooks: (() => void)[] = [];

  /** Another store's handler for a server event, on this socket and every later one. */
  on(event: string, listener: Listener): void {
    this.listeners.push([event, listener]);
    this.socket?.on(event, listener);
  }

  /** Another store's cleanup when the desk stops (sign out, a refused session). */
  onStop(hook: () => void): void {
    this.stopHooks.push(hook);
  }

  start(token: string): void {
    this.stop();
    this.connection.set('connecting');
    const socket = this.factory(token);
    this.socket = socket;
    socket.on('connect', () => this.onConnect());
    socket.on('disconnect', (reason: string) => this.onDisconnect(reason));
    socket.on('connect_error', (err: Error) => this.onConnectError(err));
    socket.on('agent_state', (p: unknown) => this.onAgentState(p));
    socket.on('incoming_call', (p: unknown) => this.onIncoming(p));
    socket.on('call_cancelled', (p: unknown) => this.onCancelled(p));
    socket.on('call_connected', (p: unknown) => this.onConnected(p));
    socket.on('transcript', (p: unknown) => this.onTranscript(p));
    socket.on('call_ended', (p: unknown) => this.onEnded(p));
    socket.on('webrtc_candidate', (p: unknown) => this.onServerCandidate(p));
    socket.on('call_monitored', (p: unknown) => this.onMonitored(p));
    socket.on('call_quality', (p: unknown) => this.onQuality(p));
    for (const [event, listener] of this.listeners) socket.on(event, listener);
    this.ticker = setInterval(() => this.tick(), 250);
  }

  stop(): void {
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
    this.socket?.disconnect();
    this.socket = null;
    this.media.close();
    this.ringer.stopAll();
    this.offers.set([]);
    this.connection.set('disconnected');
    for (const hook of this.stopHooks) hook();
  }

  ngOnDestroy(): void {
    this.stop();
  }

  dismissProblem(): void {
    this.problem.set(null);
  }

  private tick(): void {
    const now = Date.now();
    this.now.set(now);
    if (this.notices().some((n) => n.until <= now)) {
      this.notices.update((list) => list.filter((n) => n.until > now));
    }
  }

  /** Emit `event` and wait for its acknowledgement; a timeout or a lost socket is a refusal. */
  async request(event: string, payload: object): Promise<Ack<Record<string, unknown>>> {
    const socket = this.socket;
    if (!socket?.connected) {
      return { ok: false, error: { code: 'unavailable', message: 'Not connected to the server.' } };
    }
    try {
      const ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
      if (isObject(ack) && ack['ok'] === true) return ack as Ack<Record<string, unknown>>;
      const error = isObject(ack) && isObject(ack['error']) ? ack['error'] : {};
      return {
        ok: false,
        error: { code: str(error['code'], 'bad_request'), message: str(error['message'], 'Refused.') },
      };
    } catch {
      return { ok: false, error: { code: 'unavailable', message: 'The server did not answer in time.' } };
    }
  }

  // -- socket lifecycle ---------------------------------------------------------------

  private onConnect(): void {
    this.connection.set('connected');
    if (this.problem()?.code === 'socket_lost') this.problem.set(null);
  }

  private onDisconnect(reason: string): void {
    if (reason === 'io client disconnect') {
      this.connection.set('disconnected');
      return;
    }
    if (reason === 'io server disconnect') {
      // the hub ended the session: signed out elsewhere, or the account was removed or
      // changed (PROTOCOL.md §6); it will not take this token again
      this.stop();
      this.auth.logout(true);
      this.problem.set({
        code: 'unauthorized',
        message: 'Your session was ended (signed out, or your account changed). Log in again.',
      });
      return;
    }
    this.connection.set('reconnecting');
    this.problem.set({
      code: 'socket_lost',
      message: this.inCall()
        ? 'Connection to the server lost. Reconnecting… the call’s audio continues meanwhile.'
        : 'Connection to the server lost. Reconnecting…',
    });
    // offers may be withdrawn while we are away; the hub re-offers waiting calls on reconnect
    this.offers.set([]);
    this.ringer.stopAll();
  }

  private onConnectError(err: Error): void {
    if (err?.message === 'unauthorized') {
      this.stop();
      this.auth.logout(true);
      this.problem.set({
        code: 'unauthorized',
        message: 'Your session has expired or was revoked. Log in again.',
      });
      return;
    }
    this.connection.set('reconnecting');
    this.problem.set({ code: 'socket_lost', message: 'Cannot reach the server. Retrying…' });
  }

  private onAgentState(payload: unknown): void {
    const state = parseAgentState(payload);
    if (!state) return;
    this.me.set(state);
    const call = this.call();
    if (call && call.state !== 'ended' && state.activeCallId !== call.callId) {
      this.finish(call.callId, 'connection_lost', 'system');
    } else if (call && call.state !== 'ended') {
      void this.catchUp(call);
    } else if (!call && state.activeCallId) {
      void this.restore(state.activeCallId);
    }
  }

  /** After a socket drop: fetch the turns that were posted while we were away. */
  private async catchUp(call: ActiveCall): Promise<void> {
    try {
      const turns = await this.auth.thread(call.threadId);
      this.updateCall(call.callId, (c) => {
        const have = new Set(c.lines.map((l) => `${l.role}\u0000${l.text}`));
        const missing = turns
          .filter((t) => t.at >= c.sinceAt && !have.has(`${t.role}\u0000${t.text}`))
          .map((t) => ({ ...t, final: true, seq: -1 }));
        if (!missing.length) return c;
        const lines = [...c.lines, ...missing].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
        return { ...c, lines };
      });
    } catch {
      // the live transcript goes on; the thread keeps the full record
    }
  }

  /** The page was reloaded during a call: rebuild the view and renegotiate the audio. */
  private async restore(callId: string): Promise<void> {
    try {
      const summary = await this.auth.call(callId);
      if (!summary || this.call()) return;
      const turns = await this.auth.thread(summary.threadId).catch(() => []);
      this.call.set(
        newCall(callId, {
          ...summary,
          botTranscript: turns
            .filter((t) => t.role !== 'agent')
            .map((t): BotTurn => ({ role: t.role === 'bot' ? 'bot' : 'caller', text: t.text, at: t.at })),
        }),
      );
      await this.startMedia(callId);
    } catch (e) {
      this.problem.set({ code: 'restore_failed', message: `Could not restore the call: ${String(e)}` });
    }
  }

  // -- offers -----------------------------------------------------------------------------

  private onIncoming(payload: unknown): void {
    const call = parseIncoming(payload);
    if (!call) return;
    const offer: Offer = { ...call, ringsUntil: Date.now() + call.ringTimeoutSec * 1000 };
    this.offers.update((list) => [...list.filter((o) => o.callId !== call.callId), offer]);
    const who = call.caller.name || call.caller.number || 'Unknown caller';
    this.ringer.ring(call.callId, `Incoming call: ${who}`, call.botTranscript.at(-1)?.text ?? '');
  }

  private removeOffer(callId: string): Offer | undefined {
    const offer = this.offers().find((o) => o.callId === callId);
    if (offer) this.offers.update((list) => list.filter((o) => o.callId !== callId));
    this.ringer.stop(callId, this.offers().length);
    return offer;
  }

  private onCancelled(payload: unknown): void {
    if (!isObject(payload) || typeof payload['callId'] !== 'string') return;
    const reason = payload['reason'] as CancelReason;
    const offer = this.removeOffer(payload['callId']);
    if (!offer || !(reason in NOTICE_TEXT)) return;
    this.notify(offer, reason);
  }

  private notify(offer: Offer, reason: CancelReason): void {
    this.notices.update((list) => [
      ...list.filter((n) => n.callId !== offer.callId),
      { id: ++this.noticeSeq, callId: offer.callId, reason, caller: offer.caller, until: Date.now() + NOTICE_MS },
    ]);
    this.history.update((h) => [
      { callId: offer.callId, threadId: offer.threadId, caller: offer.caller, at: Date.now(), seconds: 0, outcome: NOTICE_TEXT[reason] },
      ...h,
    ]);
  }

  async setAvailable(available: boolean): Promise<void> {
    const ack = await this.request('set_status', { status: available ? 'available' : 'away' });
    if (!ack.ok) this.problem.set({ code: ack.error.code, message: `Status not changed: ${ack.error.message}` });
  }

  async accept(callId: string): Promise<void> {
    const offer = this.offers().find((o) => o.callId === callId);
    if (!offer || this.inCall() || this.busy()) return;
    this.busy.set(true);
    let mic: MediaStream;
    try {
      mic = await this.media.acquireMicrophone();
    } catch (e) {
      const p = e as MediaProblem;
      this.problem.set({ code: p.code, message: p.message });
      this.busy.set(false);
      return;
    }
    const ack = await this.request('accept_call', { callId });
    this.busy.set(false);
    if (!ack.ok) {
      for (const t of mic.getTracks()) t.stop();
      if (ack.error.code === 'already_answered' || ack.error.code === 'not_found') {
        this.removeOffer(callId);
        this.notify(offer, 'answered_elsewhere');
        this.problem.set({ code: 'answered_elsewhere', message: 'Another agent answered this call first.' });
      } else {
        this.problem.set({ code: ack.error.code, message: `Could not accept: ${ack.error.message}` });
      }
      return;
    }
    for (const other of this.offers()) this.removeOffer(other.callId);
    this.ringer.stopAll();
    this.call.set(newCall(callId, offer));
    if (this.problem()?.code !== 'socket_lost') this.problem.set(null);
    this.mediaRetries = 0;
    await this.startMedia(callId, mic);
  }

  async decline(callId: string): Promise<void> {
    const offer = this.removeOffer(callId);
    const ack = await this.request('decline_call', { callId });
    if (offer) this.notify(offer, 'declined');
    if (!ack.ok && ack.error.code !== 'not_found') {
      this.problem.set({ code: ack.error.code, message: `Decline failed: ${ack.error.message}` });
    }
  }

  // -- the call ---------------------------------------------------------------------------

  private async startMedia(callId: string, mic?: MediaStream): Promise<void> {
    try {
      const stream = mic ?? (await this.media.acquireMicrophone());
      const { signal, trickle } = this.peerSignalling(callId);
      await this.media.connect(stream, signal, trickle, () => this.onMediaFailed(callId));
      if (this.call()?.muted) this.media.setMuted(true);
    } catch (e) {
      const p = e instanceof MediaProblem ? e : new MediaProblem('webrtc_failed', String(e));
      this.problem.set({ code: p.code, message: p.message });
    }
  }

  /** One call's offer/answer and browser trickle through the hub (`webrtc_offer`,
   * `webrtc_candidate`): the agent's own call and a supervisor's monitoring leg alike. */
  peerSignalling(callId: string): { signal: Signal; trickle: Trickle } {
    return {
      signal: async (sdp) => {
        const ack = await this.request('webrtc_offer', { callId, sdp });
        if (!ack.ok) throw new MediaProblem('webrtc_failed', `The server refused the audio: ${ack.error.message}`);
        return str(ack['sdp']);
      },
      trickle: (c) => {
        void this.request('webrtc_candidate', {
          callId,
          candidate: c ? c.candidate : null,
          sdpMid: c?.sdpMid ?? null,
          sdpMLineIndex: c?.sdpMLineIndex ?? null,
        });
      },
    };
  }

  private onMediaFailed(callId: string): void {
    if (this.call()?.callId !== callId || !this.inCall()) return;
    if (this.mediaRetries >= MAX_MEDIA_RETRIES) {
      this.problem.set({ code: 'webrtc_failed', message: 'The audio connection failed. Check the network; hang up or return the call to the bot.' });
      return;
    }
    this.mediaRetries++;
    this.problem.set({ code: 'webrtc_reconnecting', message: 'The audio connection dropped. Reconnecting the audio…' });
    void this.startMedia(callId);
  }

  private onServerCandidate(payload: unknown): void {
    if (!isObject(payload) || payload['callId'] !== this.call()?.callId) return;
    this.media.addRemoteCandidate(payload);
  }

  private updateCall(callId: string, fn: (c: ActiveCall) => ActiveCall): void {
    this.call.update((c) => (c && c.callId === callId ? fn(c) : c));
  }

  private onConnected(payload: unknown): void {
    if (!isObject(payload) || typeof payload['callId'] !== 'string') return;
    this.updateCall(payload['callId'], (c) => ({
      ...c,
      state: c.state === 'ended' ? c.state : 'connected',
      connectedAt: c.connectedAt ?? Date.now(),
      sinceAt: c.connectedAt ? c.sinceAt : str(payload['at'], c.sinceAt),
    }));
    if (this.problem()?.code === 'webrtc_reconnecting') this.problem.set(null);
  }

  private onMonitored(payload: unknown): void {
    const m = parseMonitored(payload);
    if (!m) return;
    this.updateCall(m.callId, (c) => (c.state === 'ended' ? c : { ...c, monitor: m.mode }));
  }

  /** `call_quality` (issue 17): the badge shows the latest; late ones after the end are ignored. */
  private onQuality(payload: unknown): void {
    const q = parseCallQuality(payload);
    if (!q) return;
    const { callId, ...quality } = q;
    this.updateCall(callId, (c) => (c.state === 'ended' ? c : { ...c, quality }));
  }

  private onTranscript(payload: unknown): void {
    const t = parseTranscript(payload);
    if (!t) return;
    this.updateCall(t.callId, (c) => {
      const line: Line = { role: t.role, text: t.text, final: t.final, at: t.at, seq: t.seq };
      const interim = { ...c.interim };
      if (!t.final) {
        interim[t.role] = line;
        return { ...c, interim };
      }
      delete interim[t.role];
      return { ...c, interim, lines: [...c.lines, line] };
    });
  }

  private onEnded(payload: unknown): void {
    if (!isObject(payload) || typeof payload['callId'] !== 'string') return;
    const callId = payload['callId'];
    const offer = this.removeOffer(callId);
    if (offer) {
      this.notify(offer, 'caller_hangup');
      return;
    }
    this.finish(callId, str(payload['reason'], 'hangup'), str(payload['by'], 'system'));
  }

  private finish(callId: string, reason: string, by: string): void {
    const call = this.call();
    if (!call || call.callId !== callId || call.state === 'ended') return;
    this.media.close();
    const end = Date.now();
    this.call.set({ ...call, state: 'ended', endedAt: end, interim: {}, ended: { reason, by }, monitor: null });
    this.history.update((h) => [
      {
        callId,
        threadId: call.threadId,
        caller: call.caller,
        at: call.acceptedAt,
        seconds: Math.round((end - (call.connectedAt ?? call.acceptedAt)) / 1000),
        outcome: endReasonText(reason, by),
      },
      ...h,
    ]);
    if (['webrtc_failed', 'webrtc_reconnecting'].includes(this.problem()?.code ?? '')) this.problem.set(null);
  }

  dismissEnded(): void {
    if (this.call()?.state === 'ended') this.call.set(null);
  }

  async toggleMute(): Promise<void> {
    const call = this.call();
    if (!call || call.state === 'ended') return;
    const muted = !call.muted;
    this.media.setMuted(muted);
    this.updateCall(call.callId, (c) => ({ ...c, muted }));
    const ack = await this.request('mute', { callId: call.callId, muted });
    if (!ack.ok) this.problem.set({ code: ack.error.code, message: `Mute not applied on the server: ${ack.error.message}` });
  }

  async hangup(): Promise<void> {
    const call = this.call();
    if (!call || call.state === 'ended') return;
    const ack = await this.request('hangup', { callId: call.callId });
    if (!ack.ok) {
      this.problem.set({ code: ack.error.code, message: `Hang up failed: ${ack.error.message}` });
    }
  }

  async returnToBot(): Promise<void> {
    const call = this.call();
    if (!call || call.state === 'ended') return;
    const ack = await this.request('return_to_bot', { callId: call.callId });
    if (ack.ok) this.finish(call.callId, 'returned_to_bot', 'agent');
    else this.problem.set({ code: ack.error.code, message: `Return to bot failed: ${ack.error.message}` });
  }
}
