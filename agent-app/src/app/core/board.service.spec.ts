import { TestBed } from '@angular/core/testing';
import { AuthService } from './auth.service';
import { BoardService, MONITOR_MEDIA } from './board.service';
import { DeskService } from './desk.service';
import { MediaProblem, MediaService } from './media.service';
import { RingerService } from './ringer.service';
import { SOCKET_FACTORY } from './socket';
import { BOARD, FakeMedia, FakeRinger, FakeSocket } from '../testing/fakes';

describe('BoardService', () => {
  let socket: FakeSocket;
  let media: FakeMedia;
  let monitorMedia: FakeMedia;
  let desk: DeskService;
  let board: BoardService;

  beforeEach(() => {
    socket = new FakeSocket();
    media = new FakeMedia();
    monitorMedia = new FakeMedia();
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => socket },
        { provide: MediaService, useValue: media },
        { provide: MONITOR_MEDIA, useValue: monitorMedia },
        { provide: RingerService, useValue: new FakeRinger() },
        { provide: AuthService, useValue: { logout() {}, thread: async () => [], call: async () => null } },
      ],
    });
    desk = TestBed.inject(DeskService);
    board = TestBed.inject(BoardService);
    desk.start('token');
    socket.open();
    socket.serverEmit('agent_state', { agentId: 's1', name: 'Sue', status: 'available', activeCallId: null, role: 'supervisor' });
    socket.replies.set('board_subscribe', () => ({ ok: true, ...BOARD }));
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 monitor-answer' }));
  });

  afterEach(() => desk.stop());

  it('subscribes with board_subscribe and takes the board from the answer', async () => {
    expect(desk.supervises()).toBe(true);
    board.subscribe();
    await vi.waitFor(() => expect(board.board()).not.toBeNull());
    expect(socket.events('board_subscribe')).toEqual([{}]);
    expect(board.live().map((c) => c.callId)).toEqual(['c1', 'c2']);
    expect(board.waiting().map((c) => [c.callId, c.waitingSec])).toEqual([['c2', 12]]);
    expect(board.board()?.agents.map((a) => a.name)).toEqual(['Alice', 'Sue']);
  });

  it('every board event replaces the board; garbage is ignored', async () => {
    board.subscribe();
    await vi.waitFor(() => expect(board.board()).not.toBeNull());
    socket.serverEmit('board', { calls: [], agents: BOARD.agents });
    expect(board.live()).toEqual([]);
    socket.serverEmit('board', { calls: 'nope' });
    socket.serverEmit('board', null);
    expect(board.board()?.calls).toEqual([]);
    expect(board.board()?.agents.length).toBe(2);
  });

  it('subscribes again after a reconnect', async () => {
    board.subscribe();
    await vi.waitFor(() => expect(socket.events('board_subscribe').length).toBe(1));
    socket.drop();
    socket.open();
    await vi.waitFor(() => expect(socket.events('board_subscribe').length).toBe(2));
  });

  it('a refused subscription is shown in words', async () => {
    socket.replies.set('board_subscribe', () => ({ ok: false, error: { code: 'forbidden', message: 'supervisors only' } }));
    board.subscribe();
    await vi.waitFor(() => expect(desk.problem()?.code).toBe('forbidden'));
    expect(desk.problem()?.message).toContain('supervisors only');
  });

  it('first click: monitor_call, then a separate peer negotiated with webrtc_offer', async () => {
    await board.monitor('c1', 'listen');
    expect(socket.emitted.map((e) => e.event)).toEqual(['monitor_call', 'webrtc_offer']);
    expect(socket.events('monitor_call')).toEqual([{ callId: 'c1', mode: 'listen' }]);
    expect(socket.events('webrtc_offer')).toEqual([{ callId: 'c1', sdp: 'v=0 fake-offer' }]);
    expect(monitorMedia.connected?.answer).toBe('v=0 monitor-answer');
    expect(media.connects).toBe(0); // the agent's own call peer is untouched
    expect(board.monitoring()).toEqual({ callId: 'c1', mode: 'listen' });
  });

  it('later clicks switch with monitor_mode, without renegotiating; the same mode sends nothing', async () => {
    await board.monitor('c1', 'listen');
    await board.monitor('c1', 'whisper');
    await board.monitor('c1', 'whisper');
    await board.monitor('c1', 'barge');
    expect(socket.events('monitor_mode')).toEqual([
      { callId: 'c1', mode: 'whisper' },
      { callId: 'c1', mode: 'barge' },
    ]);
    expect(socket.events('monitor_call').length).toBe(1);
    expect(monitorMedia.connects).toBe(1);
    expect(board.monitoring()?.mode).toBe('barge');
  });

  it('a refused mode switch keeps the current mode', async () => {
    await board.monitor('c1', 'listen');
    socket.replies.set('monitor_mode', () => ({ ok: false, error: { code: 'invalid_state', message: 'no' } }));
    await board.monitor('c1', 'barge');
    expect(board.monitoring()?.mode).toBe('listen');
    expect(desk.problem()?.code).toBe('invalid_state');
  });

  it('Stop sends monitor_stop and closes the monitoring peer only', async () => {
    await board.monitor('c1', 'listen');
    const closedBefore = media.closed;
    await board.stop();
    expect(socket.events('monitor_stop')).toEqual([{ callId: 'c1' }]);
    expect(monitorMedia.closed).toBeGreaterThan(0);
    expect(media.closed).toBe(closedBefore);
    expect(board.monitoring()).toBeNull();
  });

  it('monitoring another call leaves the first one', async () => {
    await board.monitor('c1', 'listen');
    await board.monitor('c3', 'barge');
    expect(socket.emitted.map((e) => e.event)).toEqual([
      'monitor_call', 'webrtc_offer', 'monitor_stop', 'monitor_call', 'webrtc_offer',
    ]);
    expect(board.monitoring()).toEqual({ callId: 'c3', mode: 'barge' });
  });

  it('a refused monitor_call opens no peer', async () => {
    socket.replies.set('monitor_call', () => ({ ok: false, error: { code: 'not_found', message: 'gone' } }));
    await board.monitor('c1', 'listen');
    expect(socket.events('webrtc_offer')).toEqual([]);
    expect(board.monitoring()).toBeNull();
    expect(desk.problem()?.code).toBe('not_found');
  });

  it('no microphone: nothing is sent, the reason is shown', async () => {
    monitorMedia.micError = new MediaProblem('mic_denied', 'Microphone permission denied.');
    await board.monitor('c1', 'listen');
    expect(socket.emitted).toEqual([]);
    expect(desk.problem()?.code).toBe('mic_denied');
  });

  it('the monitored call leaving the board closes the monitoring peer', async () => {
    board.subscribe();
    await vi.waitFor(() => expect(board.board()).not.toBeNull());
    await board.monitor('c1', 'listen');
    socket.serverEmit('board', { calls: BOARD.calls.filter((c) => c.callId !== 'c1'), agents: BOARD.agents });
    expect(board.monitoring()).toBeNull();
    expect(monitorMedia.closed).toBeGreaterThan(0);
  });

  it('signing out closes the monitoring peer and forgets the board', async () => {
    board.subscribe();
    await vi.waitFor(() => expect(board.board()).not.toBeNull());
    await board.monitor('c1', 'listen');
    desk.stop();
    expect(board.monitoring()).toBeNull();
    expect(board.board()).toBeNull();
  });
});
