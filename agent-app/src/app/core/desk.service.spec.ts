import { TestBed } from '@angular/core/testing';
import { AuthService } from './auth.service';
import { DeskService } from './desk.service';
import { MediaProblem, MediaService } from './media.service';
import { RingerService } from './ringer.service';
import { SOCKET_FACTORY } from './socket';
import { FakeMedia, FakeRinger, FakeSocket, INCOMING } from '../testing/fakes';

class FakeAuth {
  loggedOut = 0;
  turns: { role: string; text: string; at: string }[] = [];
  summary: unknown = null;
  logout(): void {
    this.loggedOut++;
  }
  async thread(): Promise<unknown[]> {
    return this.turns;
  }
  async call(): Promise<unknown> {
    return this.summary;
  }
}

const flush = () => new Promise((r) => setTimeout(r, 0));

describe('DeskService', () => {
  let socket: FakeSocket;
  let media: FakeMedia;
  let ringer: FakeRinger;
  let auth: FakeAuth;
  let desk: DeskService;

  beforeEach(() => {
    socket = new FakeSocket();
    media = new FakeMedia();
    ringer = new FakeRinger();
    auth = new FakeAuth();
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => socket },
        { provide: MediaService, useValue: media },
        { provide: RingerService, useValue: ringer },
        { provide: AuthService, useValue: auth },
      ],
    });
    desk = TestBed.inject(DeskService);
    desk.start('token');
    socket.open();
    socket.serverEmit('agent_state', { agentId: 'a1', name: 'Alice', status: 'available', activeCallId: null });
  });

  afterEach(() => desk.stop());

  async function accepted(): Promise<void> {
    socket.serverEmit('incoming_call', INCOMING);
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 answer' }));
    await desk.accept('c1');
  }

  it('shows an incoming call with its caller, thread and bot transcript, and rings', () => {
    socket.serverEmit('incoming_call', INCOMING);
    const [offer] = desk.offers();
    expect(offer.caller.number).toBe('+14155550100');
    expect(offer.threadId).toBe('t-1');
    expect(offer.botTranscript.map((t) => t.role)).toEqual(['bot', 'caller']);
    expect(offer.ringsUntil - Date.now()).toBeGreaterThan(29000);
    expect(ringer.ringing.has('c1')).toBe(true);
  });

  it('drops garbage events without changing state', () => {
    for (const bad of [null, 42, 'x', [], { callId: 7 }, { callId: '' }]) {
      socket.serverEmit('incoming_call', bad);
      socket.serverEmit('transcript', bad);
      socket.serverEmit('call_cancelled', bad);
      socket.serverEmit('call_ended', bad);
      socket.serverEmit('agent_state', bad);
    }
    expect(desk.offers()).toEqual([]);
    expect(desk.me()?.name).toBe('Alice');
  });

  it('withdraws an offer answered elsewhere with a notice and a history entry', () => {
    socket.serverEmit('incoming_call', INCOMING);
    socket.serverEmit('call_cancelled', { callId: 'c1', reason: 'answered_elsewhere' });
    expect(desk.offers()).toEqual([]);
    expect(desk.notices()[0].reason).toBe('answered_elsewhere');
    expect(desk.history()[0].outcome).toBe('Answered elsewhere');
    expect(ringer.ringing.size).toBe(0);
  });

  it('accepts: microphone first, then accept_call, then the WebRTC offer', async () => {
    await accepted();
    expect(socket.emitted.map((e) => e.event)).toEqual(['accept_call', 'webrtc_offer']);
    expect(socket.events('webrtc_offer')[0]).toEqual({ callId: 'c1', sdp: 'v=0 fake-offer' });
    expect(media.connected?.answer).toBe('v=0 answer');
    expect(desk.call()?.state).toBe('connecting');
    expect(desk.offers()).toEqual([]);
    socket.serverEmit('call_connected', { callId: 'c1', at: '2026-11-24T07:00:05Z' });
    expect(desk.call()?.state).toBe('connected');
  });

  it('does not accept when the microphone is refused, and says so in words', async () => {
    media.micError = new MediaProblem('mic_denied', 'Microphone permission denied.');
    socket.serverEmit('incoming_call', INCOMING);
    await desk.accept('c1');
    expect(socket.events('accept_call')).toEqual([]);
    expect(desk.problem()?.code).toBe('mic_denied');
    expect(desk.offers().length).toBe(1); // still ringing: fix the permission, accept again
  });

  it('losing the accept race shows "answered elsewhere"', async () => {
    socket.replies.set('accept_call', () => ({
      ok: false,
      error: { code: 'already_answered', message: 'taken' },
    }));
    socket.serverEmit('incoming_call', INCOMING);
    await desk.accept('c1');
    expect(desk.call()).toBeNull();
    expect(desk.problem()?.code).toBe('answered_elsewhere');
    expect(desk.notices()[0].reason).toBe('answered_elsewhere');
  });

  it('keeps one interim line per role, replaced by the final', async () => {
    await accepted();
    const t = { callId: 'c1', threadId: 't-1', at: '2026-11-24T07:00:06Z', seq: 1 };
    socket.serverEmit('transcript', { ...t, role: 'agent', text: 'hello', final: false });
    socket.serverEmit('transcript', { ...t, role: 'agent', text: 'hello there', final: false });
    expect(desk.call()?.interim.agent?.text).toBe('hello there');
    socket.serverEmit('transcript', { ...t, role: 'agent', text: 'hello there sir', final: true });
    socket.serverEmit('transcript', { ...t, callId: 'other', role: 'caller', text: 'no', final: true });
    expect(desk.call()?.interim).toEqual({});
    expect(desk.call()?.lines.map((l) => [l.role, l.text])).toEqual([['agent', 'hello there sir']]);
  });

  it('ends the call view on call_ended, closes media and records history', async () => {
    await accepted();
    socket.serverEmit('call_ended', { callId: 'c1', reason: 'hangup', by: 'caller' });
    expect(desk.call()?.state).toBe('ended');
    expect(desk.call()?.ended).toEqual({ reason: 'hangup', by: 'caller' });
    expect(media.closed).toBeGreaterThan(0);
    expect(desk.history()[0]).toMatchObject({ callId: 'c1', outcome: 'Call ended by the caller' });
  });

  it('mute and return to bot speak the protocol', async () => {
    await accepted();
    await desk.toggleMute();
    expect(media.muted).toBe(true);
    expect(socket.events('mute')).toEqual([{ callId: 'c1', muted: true }]);
    await desk.returnToBot();
    expect(socket.events('return_to_bot')).toEqual([{ callId: 'c1' }]);
    expect(desk.call()?.ended?.reason).toBe('returned_to_bot');
  });

  it('a socket drop keeps the call; the reconnect restores it and catches up missed turns', async () => {
    await accepted();
    socket.serverEmit('call_connected', { callId: 'c1', at: '2026-11-24T07:00:05Z' });
    socket.drop();
    expect(desk.connection()).toBe('reconnecting');
    expect(desk.problem()?.code).toBe('socket_lost');
    expect(desk.call()?.state).toBe('connected');
    auth.turns = [
      { role: 'bot', text: 'before the agent', at: '2026-11-24T07:00:01Z' },
      { role: 'caller', text: 'said while away', at: '2026-11-24T07:00:09Z' },
    ];
    socket.open();
    socket.serverEmit('agent_state', { agentId: 'a1', name: 'Alice', status: 'busy', activeCallId: 'c1' });
    await flush();
    expect(desk.connection()).toBe('connected');
    expect(desk.problem()).toBeNull();
    expect(desk.call()?.state).toBe('connected');
    expect(desk.call()?.lines.map((l) => l.text)).toEqual(['said while away']);
  });

  it('a call that did not survive the drop is shown as lost', async () => {
    await accepted();
    socket.drop();
    socket.open();
    socket.serverEmit('agent_state', { agentId: 'a1', name: 'Alice', status: 'available', activeCallId: null });
    expect(desk.call()?.state).toBe('ended');
    expect(desk.call()?.ended?.reason).toBe('connection_lost');
  });

  it('a reload during a call restores the call and renegotiates the audio', async () => {
    auth.summary = { callId: 'c9', threadId: 't-9', caller: { number: '+1555', name: '' }, called: '', state: 'human' };
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 again' }));
    socket.serverEmit('agent_state', { agentId: 'a1', name: 'Alice', status: 'busy', activeCallId: 'c9' });
    await flush();
    await flush();
    expect(desk.call()?.threadId).toBe('t-9');
    expect(socket.events('webrtc_offer')).toEqual([{ callId: 'c9', sdp: 'v=0 fake-offer' }]);
  });

  it('a failed peer connection is renegotiated', async () => {
    await accepted();
    media.failNext?.();
    await flush();
    expect(media.connects).toBe(2);
    expect(desk.problem()?.code).toBe('webrtc_reconnecting');
  });

  it('a refused token logs the agent out with a reason', () => {
    socket.serverEmit('connect_error', new Error('unauthorized'));
    expect(auth.loggedOut).toBe(1);
    expect(desk.problem()?.code).toBe('unauthorized');
    expect(desk.connection()).toBe('disconnected');
  });

  it('a session the hub ends logs the agent out without reconnecting', () => {
    socket.serverEmit('disconnect', 'io server disconnect');
    expect(auth.loggedOut).toBe(1);
    expect(desk.problem()?.code).toBe('unauthorized');
    expect(desk.connection()).toBe('disconnected');
  });

  it('a lost connection is not a logout', () => {
    socket.serverEmit('disconnect', 'transport close');
    expect(auth.loggedOut).toBe(0);
    expect(desk.connection()).toBe('reconnecting');
  });

  it('availability goes through set_status', async () => {
    await desk.setAvailable(false);
    expect(socket.events('set_status')).toEqual([{ status: 'away' }]);
  });

  it('knows the account role from agent_state (§6)', () => {
    expect(desk.role()).toBe('agent');
    expect(desk.supervises()).toBe(false);
    socket.serverEmit('agent_state', { agentId: 'a1', name: 'Alice', status: 'available', activeCallId: null, role: 'admin' });
    expect(desk.supervises()).toBe(true);
  });

  it('call_monitored marks the call held, and is forgotten when the call ends', async () => {
    await accepted();
    socket.serverEmit('call_monitored', { callId: 'c1', mode: 'whisper', monitors: 1 });
    expect(desk.call()?.monitor).toBe('whisper');
    socket.serverEmit('call_monitored', { callId: 'c1', mode: null, monitors: 0 });
    expect(desk.call()?.monitor).toBeNull();
    socket.serverEmit('call_monitored', { callId: 'c1', mode: 'barge', monitors: 1 });
    socket.serverEmit('call_ended', { callId: 'c1', reason: 'hangup', by: 'caller' });
    expect(desk.call()?.monitor).toBeNull();
  });

  it('a transferred call keeps who handed it over and what was said before', async () => {
    const transfer = { fromAgentId: 'a2', fromName: 'Bob', mode: 'cold', note: 'refund' };
    const humanTranscript = [{ role: 'agent', text: 'one moment', at: '2026-11-24T07:01:00Z' }];
    socket.serverEmit('incoming_call', { ...INCOMING, transfer, humanTranscript });
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 answer' }));
    await desk.accept('c1');
    expect(desk.call()?.transfer).toEqual(transfer);
    expect(desk.call()?.humanTranscript).toEqual(humanTranscript);
  });

  it('a supervisor\'s transcript lines are kept with their role', async () => {
    await accepted();
    socket.serverEmit('transcript', { callId: 'c1', threadId: 't-1', role: 'supervisor', text: 'psst', final: true, at: 'x', seq: 2 });
    expect(desk.call()?.lines.map((l) => l.role)).toEqual(['supervisor']);
  });
});
