import { signal } from '@angular/core';
import { AgentSocket } from '../core/socket';

type Listener = (...args: any[]) => void;

/** An in-memory stand-in for a socket.io-client Socket: tests play the hub. */
export class FakeSocket implements AgentSocket {
  connected = false;
  active = true;
  auth: unknown = null;
  readonly emitted: { event: string; payload: unknown }[] = [];
  /** What the "hub" acknowledges, per event (default `{ok: true}`). */
  readonly replies = new Map<string, (payload: any) => unknown>();
  private readonly listeners = new Map<string, Listener[]>();
  readonly io = { on: () => undefined };

  on(event: string, listener: Listener): this {
    this.listeners.set(event, [...(this.listeners.get(event) ?? []), listener]);
    return this;
  }

  emit(event: string, payload?: unknown): this {
    this.emitted.push({ event, payload });
    return this;
  }

  timeout(): { emitWithAck(event: string, payload?: unknown): Promise<unknown> } {
    return {
      emitWithAck: async (event: string, payload?: unknown) => {
        this.emitted.push({ event, payload });
        const reply = this.replies.get(event);
        return reply ? reply(payload) : { ok: true };
      },
    };
  }

  connect(): this {
    return this;
  }

  disconnect(): this {
    this.connected = false;
    return this;
  }

  /** The hub sends `event`. */
  serverEmit(event: string, ...args: unknown[]): void {
    for (const l of this.listeners.get(event) ?? []) l(...args);
  }

  open(): void {
    this.connected = true;
    this.serverEmit('connect');
  }

  drop(reason = 'transport close'): void {
    this.connected = false;
    this.serverEmit('disconnect', reason);
  }

  events(name: string): unknown[] {
    return this.emitted.filter((e) => e.event === name).map((e) => e.payload);
  }
}

export class FakeMedia {
  readonly micDbfs = signal(-100);
  readonly remoteDbfs = signal(-100);
  readonly peerState = signal<string>('idle');
  micError: unknown = null;
  connected: { sdp: string; answer: string } | null = null;
  muted: boolean | null = null;
  closed = 0;
  connects = 0;
  failNext: (() => void) | null = null;

  async acquireMicrophone(): Promise<MediaStream> {
    if (this.micError) throw this.micError;
    return { getTracks: () => [], getAudioTracks: () => [] } as unknown as MediaStream;
  }

  async connect(
    _local: MediaStream,
    signalFn: (sdp: string) => Promise<string>,
    _trickle: unknown,
    onFailed: () => void,
  ): Promise<void> {
    this.connects++;
    this.peerState.set('connecting');
    this.failNext = onFailed;
    const answer = await signalFn('v=0 fake-offer');
    this.connected = { sdp: 'v=0 fake-offer', answer };
  }

  addRemoteCandidate(): void {}

  setMuted(muted: boolean): void {
    this.muted = muted;
  }

  close(): void {
    this.closed++;
    this.peerState.set('idle');
  }
}

export class FakeRinger {
  ringing = new Set<string>();
  requestPermission(): void {}
  ring(callId: string): void {
    this.ringing.add(callId);
  }
  stop(callId: string): void {
    this.ringing.delete(callId);
  }
  stopAll(): void {
    this.ringing.clear();
  }
}

export const INCOMING = {
  callId: 'c1',
  threadId: 't-1',
  caller: { number: '+14155550100', name: 'Ada' },
  called: '+14155550123',
  trunk: 'local',
  receivedAt: '2026-11-24T07:00:00Z',
  ringTimeoutSec: 30,
  botTranscript: [
    { role: 'bot', text: 'How can I help you today?', at: '2026-11-24T07:00:00Z' },
    { role: 'caller', text: 'agent please', at: '2026-11-24T07:00:02Z' },
  ],
  metadata: {},
  transfer: null,
  humanTranscript: [],
  summary: null,
};

/** A `board` as the hub sends it (§6): one call with Alice, one waiting. */
export const BOARD = {
  calls: [
    {
      callId: 'c1', threadId: 't-1', state: 'human',
      caller: { number: '+14155550100', name: 'Ada' }, called: '+14155550123', trunk: 'local',
      receivedAt: '2026-11-24T07:00:00Z', workerId: 'w1', agentId: 'a1', metadata: {},
      waitingSec: null, monitors: [],
    },
    {
      callId: 'c2', threadId: 't-2', state: 'queued',
      caller: { number: '+14155550111', name: '' }, called: '+14155550123', trunk: 'local',
      receivedAt: '2026-11-24T07:01:00Z', workerId: 'w1', agentId: null, metadata: {},
      waitingSec: 12, monitors: [],
    },
  ],
  agents: [
    { agentId: 'a1', name: 'Alice', status: 'busy', activeCallId: 'c1', role: 'agent' },
    { agentId: 's1', name: 'Sue', status: 'available', activeCallId: null, role: 'supervisor' },
  ],
};

/** What `desk_options` answers. */
export const DESK_OPTIONS = {
  ok: true,
  dispositions: ['resolved', 'callback'],
  queues: ['sales', 'support'],
  agents: [
    { agentId: 'a2', name: 'Bob', status: 'available' },
    { agentId: 'a3', name: 'Carol', status: 'away' },
  ],
};
