import { TestBed } from '@angular/core/testing';
import { BoardView } from './board';
import { MONITOR_MEDIA } from '../core/board.service';
import { AuthService } from '../core/auth.service';
import { DeskService } from '../core/desk.service';
import { MediaService } from '../core/media.service';
import { RingerService } from '../core/ringer.service';
import { SOCKET_FACTORY } from '../core/socket';
import { BOARD, FakeMedia, FakeRinger, FakeSocket } from '../testing/fakes';

describe('BoardView', () => {
  let socket: FakeSocket;
  let monitorMedia: FakeMedia;
  let desk: DeskService;

  beforeEach(() => {
    socket = new FakeSocket();
    monitorMedia = new FakeMedia();
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => socket },
        { provide: MediaService, useValue: new FakeMedia() },
        { provide: MONITOR_MEDIA, useValue: monitorMedia },
        { provide: RingerService, useValue: new FakeRinger() },
      ],
    });
    desk = TestBed.inject(DeskService);
    desk.start('tok');
    socket.open();
    socket.serverEmit('agent_state', { agentId: 's1', name: 'Sue', status: 'available', activeCallId: null, role: 'supervisor' });
    socket.replies.set('board_subscribe', () => ({ ok: true, ...BOARD }));
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 answer' }));
  });

  afterEach(() => desk.stop());

  async function render() {
    const fixture = TestBed.createComponent(BoardView);
    await vi.waitFor(() => expect(socket.events('board_subscribe').length).toBe(1));
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    const q = (sel: string) => el.querySelector(sel) as HTMLElement | null;
    const row = (callId: string) => (id: string) => q(`[data-testid="board-call-${callId}"] [data-testid="${id}"]`);
    return { fixture, el, q, row };
  }

  it('lists waiting calls with their wait, agents with status and call, live calls with state and agent', async () => {
    const { q } = await render();
    expect(q('[data-testid="board"]')).not.toBeNull();
    expect(q('[data-testid="board-waiting-c2"]')?.textContent).toContain('+14155550111');
    expect(q('[data-testid="board-waiting-c2"] .wait')?.textContent?.trim()).toMatch(/^00:1[23]$/);
    const alice = q('[data-testid="board-agent-a1"]')!;
    expect(alice.dataset['status']).toBe('busy');
    expect(alice.textContent).toContain('Busy');
    expect(alice.textContent).toContain('+14155550100');
    const c1 = q('[data-testid="board-call-c1"]')!;
    expect(c1.dataset['state']).toBe('human');
    expect(c1.textContent).toContain('Alice');
    expect(c1.textContent).toContain('With an agent');
    expect(q('[data-testid="board-call-c2"]')?.dataset['state']).toBe('queued');
    // only a call with an agent can be monitored
    expect(q('[data-testid="board-call-c2"] [data-testid="monitor-listen"]')).toBeNull();
  });

  it('Listen joins the call, Whisper and Barge switch, the active mode is pressed, Stop leaves', async () => {
    const { fixture, q, row } = await render();
    const c1 = row('c1');
    expect(c1('monitor-stop')?.hasAttribute('disabled')).toBe(true);
    c1('monitor-listen')!.click();
    await vi.waitFor(() => expect(socket.events('webrtc_offer').length).toBe(1));
    await fixture.whenStable();
    expect(socket.events('monitor_call')).toEqual([{ callId: 'c1', mode: 'listen' }]);
    expect(socket.events('webrtc_offer')).toEqual([{ callId: 'c1', sdp: 'v=0 fake-offer' }]);
    expect(c1('monitor-listen')?.getAttribute('aria-pressed')).toBe('true');
    expect(c1('monitor-whisper')?.getAttribute('aria-pressed')).toBe('false');
    expect(q('[data-testid="monitor-status"]')?.dataset['mode']).toBe('listen');

    c1('monitor-whisper')!.click();
    await vi.waitFor(() => expect(socket.events('monitor_mode').length).toBe(1));
    await fixture.whenStable();
    expect(c1('monitor-whisper')?.getAttribute('aria-pressed')).toBe('true');
    expect(c1('monitor-listen')?.getAttribute('aria-pressed')).toBe('false');
    c1('monitor-barge')!.click();
    await vi.waitFor(() => expect(socket.events('monitor_mode').length).toBe(2));
    await fixture.whenStable();
    expect(socket.events('monitor_mode')).toEqual([
      { callId: 'c1', mode: 'whisper' },
      { callId: 'c1', mode: 'barge' },
    ]);
    expect(c1('monitor-barge')?.getAttribute('aria-pressed')).toBe('true');
    expect(socket.events('monitor_call').length).toBe(1);

    c1('monitor-stop')!.click();
    await vi.waitFor(() => expect(socket.events('monitor_stop')).toEqual([{ callId: 'c1' }]));
    await fixture.whenStable();
    expect(q('[data-testid="monitor-status"]')).toBeNull();
    expect(c1('monitor-barge')?.getAttribute('aria-pressed')).toBe('false');
    expect(monitorMedia.closed).toBeGreaterThan(0);
  });

  it('a supervisor cannot monitor its own call', async () => {
    socket.replies.set('board_subscribe', () => ({
      ok: true,
      calls: [{ ...BOARD.calls[0], agentId: 's1' }],
      agents: BOARD.agents,
    }));
    const { row } = await render();
    expect(row('c1')('monitor-listen')).toBeNull();
  });

  it('a board event redraws the board', async () => {
    const { fixture, q } = await render();
    socket.serverEmit('board', { calls: [], agents: [] });
    await fixture.whenStable();
    expect(q('[data-testid="board-call-c1"]')).toBeNull();
    expect(q('[data-testid="board-calls"]')?.textContent).toContain('No live call');
  });

  const GOOD = { mos: 4.3, legs: [{ leg: 'caller', lossPct: 0.2, latePct: 0, jitterMs: 4, mos: 4.3 }] };
  const POOR = { mos: 3.1, legs: [{ leg: 'caller', lossPct: 5, latePct: 2, jitterMs: 30, mos: 3.1 }] };

  it('shows the MOS of each live call, from the board and from call_quality', async () => {
    socket.replies.set('board_subscribe', () => ({
      ok: true,
      calls: [{ ...BOARD.calls[0], quality: GOOD }, { ...BOARD.calls[1], quality: null }],
      agents: BOARD.agents,
    }));
    const { fixture, q } = await render();
    const c1 = q('[data-testid="board-quality-c1"]')!;
    expect(c1.dataset['mos']).toBe('4.3');
    expect(c1.getAttribute('aria-label')).toBe('Call quality: good, MOS 4.3');
    expect(c1.title).toContain('Caller: loss 0.2 %');
    const c2 = q('[data-testid="board-quality-c2"]')!;
    expect(c2.dataset['mos']).toBeUndefined();
    expect(c2.textContent).toContain('—');
    expect(c2.textContent).toContain('not measured');

    socket.serverEmit('call_quality', { callId: 'c1', ...POOR });
    await fixture.whenStable();
    expect(q('[data-testid="board-quality-c1"]')?.dataset['mos']).toBe('3.1');
    expect(q('[data-testid="board-quality-c1"]')?.dataset['level']).toBe('poor');

    socket.serverEmit('board', { calls: [{ ...BOARD.calls[0], quality: { ...GOOD, mos: 4.1 } }, BOARD.calls[1]], agents: BOARD.agents });
    await fixture.whenStable();
    expect(q('[data-testid="board-quality-c1"]')?.dataset['mos']).toBe('4.1');
    expect(q('[data-testid="board-quality-c2"]')?.dataset['mos']).toBeUndefined();
  });

  it('lists calls that ended with their last MOS and plays their recording', async () => {
    const fetchMock = vi.fn(async () => ({ ok: true, status: 200, blob: async () => new Blob(['OggS']) }));
    vi.stubGlobal('fetch', fetchMock);
    const original = { create: URL.createObjectURL, revoke: URL.revokeObjectURL };
    const revoked: string[] = [];
    URL.createObjectURL = (() => 'blob:http://localhost/c1') as typeof URL.createObjectURL;
    URL.revokeObjectURL = ((u: string) => void revoked.push(u)) as typeof URL.revokeObjectURL;
    const play = vi.spyOn(HTMLMediaElement.prototype, 'play').mockImplementation(() => Promise.resolve());
    TestBed.inject(AuthService).token.set('tok');
    try {
      socket.replies.set('board_subscribe', () => ({
        ok: true, calls: [{ ...BOARD.calls[0], quality: POOR }, BOARD.calls[1]], agents: BOARD.agents,
      }));
      const { fixture, q } = await render();
      expect(q('[data-testid="board-ended"]')?.textContent).toContain('No call has ended');
      socket.serverEmit('board', { calls: [BOARD.calls[1]], agents: BOARD.agents });
      await fixture.whenStable();
      const ended = q('[data-testid="board-ended-c1"]')!;
      expect(ended.textContent).toContain('+14155550100');
      expect(ended.textContent).toContain('Alice');
      expect(ended.textContent).toContain('Poor quality · MOS 3.1');
      expect(q('[data-testid="board-ended-c2"]')).toBeNull();
      expect(q('[data-testid="board-call-c1"]')).toBeNull();

      // a board that lists an ended call keeps it out of the live calls, in the ended ones
      socket.serverEmit('board', { calls: [{ ...BOARD.calls[1], state: 'ended' }], agents: BOARD.agents });
      await fixture.whenStable();
      expect(q('[data-testid="board-call-c2"]')).toBeNull();
      expect(
        [...fixture.nativeElement.querySelectorAll('[data-testid^="board-ended-c"]')].map((e: HTMLElement) => e.dataset['callId']),
      ).toEqual(['c2', 'c1']);

      (q('[data-testid="board-ended-c1"] [data-testid="recording-play-c1"]') as HTMLElement).click();
      await vi.waitFor(() => expect(q('[data-testid="recording-audio-c1"]')).not.toBeNull());
      expect(fetchMock).toHaveBeenCalledWith('/api/recordings/c1', { headers: { Authorization: 'Bearer tok' } });
      expect(q('[data-testid="recording-audio-c1"]')?.getAttribute('src')).toBe('blob:http://localhost/c1');
      desk.stop(); // signing out empties the board: the player goes, its URL is revoked
      await fixture.whenStable();
      expect(revoked).toEqual(['blob:http://localhost/c1']);
    } finally {
      URL.createObjectURL = original.create;
      URL.revokeObjectURL = original.revoke;
      play.mockRestore();
      vi.unstubAllGlobals();
    }
  });
});
