import { TestBed } from '@angular/core/testing';
import { App } from './app';
import { AuthService } from './core/auth.service';
import { DeskService } from './core/desk.service';
import { MediaService } from './core/media.service';
import { RingerService } from './core/ringer.service';
import { SOCKET_FACTORY } from './core/socket';
import { FakeMedia, FakeRinger, FakeSocket, INCOMING } from './testing/fakes';

describe('App', () => {
  let socket: FakeSocket;

  beforeEach(() => {
    sessionStorage.clear();
    socket = new FakeSocket();
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => socket },
        { provide: MediaService, useValue: new FakeMedia() },
        { provide: RingerService, useValue: new FakeRinger() },
      ],
    });
  });

  afterEach(() => {
    TestBed.inject(DeskService).stop();
    vi.unstubAllGlobals();
  });

  const q = (el: HTMLElement, id: string) => el.querySelector(`[data-testid="${id}"]`) as HTMLElement | null;

  it('asks for a login first and shows a wrong password in words', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => new Response('{}', { status: 401 })));
    const fixture = TestBed.createComponent(App);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    expect(q(el, 'login-submit')).not.toBeNull();
    const user = q(el, 'login-username') as HTMLInputElement;
    const pass = q(el, 'login-password') as HTMLInputElement;
    user.value = 'alice';
    user.dispatchEvent(new Event('input'));
    pass.value = 'nope';
    pass.dispatchEvent(new Event('input'));
    await fixture.whenStable();
    q(el, 'login-submit')!.click();
    await new Promise((r) => setTimeout(r, 0));
    await fixture.whenStable();
    expect(q(el, 'login-error')?.textContent).toContain('Wrong username or password');
  });

  it('after login: the desk connects, rings, and shows the socket state', async () => {
    vi.stubGlobal('fetch', vi.fn(async () =>
      new Response(JSON.stringify({ token: 'tok', expiresAt: new Date(Date.now() + 3600e3).toISOString() }), { status: 200 })));
    await TestBed.inject(AuthService).login('alice', 'pw');
    const fixture = TestBed.createComponent(App);
    await fixture.whenStable();
    socket.open();
    socket.serverEmit('agent_state', { agentId: 'a1', name: 'Alice', status: 'available', activeCallId: null });
    socket.serverEmit('incoming_call', INCOMING);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    expect(q(el, 'agent-name')?.textContent).toContain('Alice');
    expect(q(el, 'status-toggle')?.getAttribute('aria-pressed')).toBe('true');
    expect(q(el, 'connection-state')?.dataset['state']).toBe('connected');
    expect(q(el, 'incoming-call')?.dataset['callId']).toBe('c1');
    socket.serverEmit('call_cancelled', { callId: 'c1', reason: 'answered_elsewhere' });
    socket.drop();
    await fixture.whenStable();
    expect(q(el, 'incoming-call')).toBeNull();
    expect(q(el, 'call-notice')?.textContent).toContain('Answered elsewhere');
    expect(q(el, 'connection-state')?.dataset['state']).toBe('reconnecting');
    expect(q(el, 'error-banner')?.dataset['code']).toBe('socket_lost');
  });
});

describe('App keyboard', () => {
  it('Alt+D declines the ringing call without a mouse', async () => {
    sessionStorage.setItem('hitl-sip.token', JSON.stringify({ token: 't', expiresAt: new Date(Date.now() + 3600e3).toISOString() }));
    const socket = new FakeSocket();
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => socket },
        { provide: MediaService, useValue: new FakeMedia() },
        { provide: RingerService, useValue: new FakeRinger() },
      ],
    });
    const fixture = TestBed.createComponent(App);
    await fixture.whenStable();
    socket.open();
    socket.serverEmit('incoming_call', INCOMING);
    document.dispatchEvent(new KeyboardEvent('keydown', { key: 'd', altKey: true }));
    await new Promise((r) => setTimeout(r, 0));
    expect(socket.events('decline_call')).toEqual([{ callId: 'c1' }]);
    TestBed.inject(DeskService).stop();
    sessionStorage.clear();
  });
});

describe('App roles', () => {
  afterEach(() => {
    TestBed.inject(DeskService).stop();
    sessionStorage.clear();
  });

  async function desk(role: string) {
    sessionStorage.setItem('hitl-sip.token', JSON.stringify({ token: 't', expiresAt: new Date(Date.now() + 3600e3).toISOString() }));
    const socket = new FakeSocket();
    socket.replies.set('board_subscribe', () => ({ ok: true, calls: [], agents: [] }));
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => socket },
        { provide: MediaService, useValue: new FakeMedia() },
        { provide: RingerService, useValue: new FakeRinger() },
      ],
    });
    const fixture = TestBed.createComponent(App);
    await fixture.whenStable();
    socket.open();
    socket.serverEmit('agent_state', { agentId: 'a1', name: 'Alice', status: 'available', activeCallId: null, role });
    await fixture.whenStable();
    return { socket, fixture, el: fixture.nativeElement as HTMLElement };
  }

  it('a supervisor sees the board, and it subscribes', async () => {
    const { socket, el } = await desk('supervisor');
    expect(el.querySelector('[data-testid="board"]')).not.toBeNull();
    await vi.waitFor(() => expect(socket.events('board_subscribe')).toEqual([{}]));
  });

  it('an agent sees no board and never asks for it', async () => {
    const { socket, el } = await desk('agent');
    expect(el.querySelector('[data-testid="board"]')).toBeNull();
    expect(socket.events('board_subscribe')).toEqual([]);
  });

  it('Alt+T opens the Transfer dialog during a call', async () => {
    const { socket, fixture, el } = await desk('agent');
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 a' }));
    socket.serverEmit('incoming_call', INCOMING);
    await TestBed.inject(DeskService).accept('c1');
    document.dispatchEvent(new KeyboardEvent('keydown', { key: 't', altKey: true }));
    await fixture.whenStable();
    expect(el.querySelector('[data-testid="transfer-dialog"]')).not.toBeNull();
  });
});

