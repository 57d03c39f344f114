import { TestBed } from '@angular/core/testing';
import { BoardView } from './board';
import { MONITOR_MEDIA } from '../core/board.service';
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
});
