import { TestBed } from '@angular/core/testing';
import { RecordingPlayer } from './recording-player';
import { History } from './history';
import { AuthService } from '../core/auth.service';
import { DeskService } from '../core/desk.service';
import { MediaService } from '../core/media.service';
import { RingerService } from '../core/ringer.service';
import { SOCKET_FACTORY } from '../core/socket';
import { FakeMedia, FakeRinger, FakeSocket } from '../testing/fakes';

type Reply = { ok: boolean; status: number; blob?: () => Promise<Blob> } | Error;

/** fetch → blob → object URL, all played by the test. */
function stubBrowser(reply: () => Reply) {
  const fetchMock = vi.fn(async (_url: string, _init?: RequestInit) => {
    const r = reply();
    if (r instanceof Error) throw r;
    return r as unknown as Response;
  });
  vi.stubGlobal('fetch', fetchMock);
  let n = 0;
  const created: string[] = [];
  const revoked: string[] = [];
  const original = { create: URL.createObjectURL, revoke: URL.revokeObjectURL };
  URL.createObjectURL = (() => {
    const url = `blob:http://localhost/rec-${++n}`;
    created.push(url);
    return url;
  }) as typeof URL.createObjectURL;
  URL.revokeObjectURL = ((url: string) => void revoked.push(url)) as typeof URL.revokeObjectURL;
  const play = vi.spyOn(HTMLMediaElement.prototype, 'play').mockImplementation(() => Promise.resolve());
  const restore = () => {
    URL.createObjectURL = original.create;
    URL.revokeObjectURL = original.revoke;
    play.mockRestore();
    vi.unstubAllGlobals();
  };
  return { fetchMock, created, revoked, play, restore };
}

const WAV = () => ({ ok: true, status: 200, blob: async () => new Blob(['RIFF'], { type: 'audio/wav' }) });

describe('RecordingPlayer', () => {
  let browser: ReturnType<typeof stubBrowser>;
  let reply: () => Reply;

  beforeEach(() => {
    reply = WAV;
    browser = stubBrowser(() => reply());
    TestBed.inject(AuthService).token.set('tok-1');
  });

  afterEach(() => browser.restore());

  async function render() {
    const fixture = TestBed.createComponent(RecordingPlayer);
    fixture.componentRef.setInput('callId', 'c1');
    fixture.componentRef.setInput('who', '+14155550100');
    await fixture.whenStable();
    document.body.appendChild(fixture.nativeElement);
    const el: HTMLElement = fixture.nativeElement;
    const q = (id: string) => el.querySelector(`[data-testid="${id}"]`) as HTMLElement | null;
    const press = async (id: string) => {
      q(id)!.click();
      await vi.waitFor(() => expect(browser.fetchMock.mock.calls.length + browser.revoked.length).toBeGreaterThan(0));
      await fixture.whenStable();
    };
    return { fixture, el, q, press };
  }

  it('fetches the recording with the token and plays it in the page; Close revokes the URL', async () => {
    const { fixture, q, press } = await render();
    const button = q('recording-play-c1')!;
    expect(button.textContent?.trim()).toBe('Play recording');
    expect(button.getAttribute('aria-label')).toBe('Play recording of the call from +14155550100');
    expect(q('recording-audio-c1')).toBeNull();

    await press('recording-play-c1');
    await vi.waitFor(() => expect(q('recording-audio-c1')).not.toBeNull());
    const [url, init] = browser.fetchMock.mock.calls[0];
    expect(url).toBe('/api/recordings/c1');
    expect((init?.headers as Record<string, string>)['Authorization']).toBe('Bearer tok-1');
    const audio = q('recording-audio-c1') as HTMLAudioElement;
    expect(audio.tagName).toBe('AUDIO');
    expect(audio.hasAttribute('controls')).toBe(true);
    expect(audio.getAttribute('src')).toBe(browser.created[0]);
    expect(audio.getAttribute('aria-label')).toBe('Recording of the call from +14155550100');
    await vi.waitFor(() => expect(browser.play).toHaveBeenCalled());
    expect(document.activeElement).toBe(audio);
    expect(q('recording-play-c1')).toBeNull();

    q('recording-close-c1')!.click();
    await fixture.whenStable();
    expect(browser.revoked).toEqual([browser.created[0]]);
    expect(q('recording-audio-c1')).toBeNull();
    await vi.waitFor(() => expect(document.activeElement).toBe(q('recording-play-c1')));
    fixture.nativeElement.remove();
  });

  it('says so when there is no recording (404), and on other errors', async () => {
    reply = () => ({ ok: false, status: 404 });
    const { fixture, q, press } = await render();
    await press('recording-play-c1');
    await vi.waitFor(() => expect(q('recording-message-c1')?.textContent?.trim()).toBe('No recording for this call'));
    expect(q('recording-message-c1')?.getAttribute('role')).toBe('status');
    expect(q('recording-audio-c1')).toBeNull();
    expect(q('recording-play-c1')?.getAttribute('aria-disabled')).toBe('false');
    expect(browser.created).toEqual([]);

    reply = () => ({ ok: false, status: 500 });
    q('recording-play-c1')!.click();
    await vi.waitFor(() => expect(q('recording-message-c1')?.textContent).toContain('Could not load the recording (HTTP 500)'));
    reply = () => ({ ok: false, status: 403 });
    q('recording-play-c1')!.click();
    await vi.waitFor(() => expect(q('recording-message-c1')?.textContent).toContain('for supervisors and admins'));
    reply = () => new TypeError('Failed to fetch');
    q('recording-play-c1')!.click();
    await vi.waitFor(() => expect(q('recording-message-c1')?.textContent).toContain('cannot be reached'));
    await fixture.whenStable();
    fixture.nativeElement.remove();
  });

  it('revokes the object URL when the player goes away', async () => {
    const { fixture, q, press } = await render();
    await press('recording-play-c1');
    await vi.waitFor(() => expect(q('recording-audio-c1')).not.toBeNull());
    fixture.nativeElement.remove();
    fixture.destroy();
    expect(browser.revoked).toEqual(browser.created);
    expect(browser.created.length).toBe(1);
  });
});

describe('History recordings', () => {
  let browser: ReturnType<typeof stubBrowser>;

  beforeEach(() => {
    browser = stubBrowser(WAV);
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => new FakeSocket() },
        { provide: MediaService, useValue: new FakeMedia() },
        { provide: RingerService, useValue: new FakeRinger() },
      ],
    });
  });

  afterEach(() => browser.restore());

  const ITEM = {
    callId: 'c1', threadId: 't-1', caller: { number: '+14155550100', name: 'Ada' },
    at: Date.now(), seconds: 42, outcome: 'Call ended by the caller',
  };

  it('offers Play recording to supervisors and admins only', async () => {
    const desk = TestBed.inject(DeskService);
    desk.history.set([ITEM]);
    desk.me.set({ agentId: 'a1', name: 'Alice', status: 'available', activeCallId: null, role: 'agent' });
    const fixture = TestBed.createComponent(History);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    expect(el.querySelector('[data-testid="history-item"]')).not.toBeNull();
    expect(el.querySelector('[data-testid="recording-play-c1"]')).toBeNull();

    desk.me.set({ agentId: 's1', name: 'Sue', status: 'available', activeCallId: null, role: 'supervisor' });
    await fixture.whenStable();
    const play = el.querySelector('[data-testid="history-item"] [data-testid="recording-play-c1"]') as HTMLElement;
    expect(play).not.toBeNull();
    play.click();
    await vi.waitFor(() => expect(el.querySelector('[data-testid="recording-audio-c1"]')).not.toBeNull());
    expect(browser.fetchMock.mock.calls[0][0]).toBe('/api/recordings/c1');

    desk.me.set({ agentId: 's1', name: 'Sue', status: 'available', activeCallId: null, role: 'admin' });
    desk.history.set([]);
    await fixture.whenStable();
    expect(browser.revoked).toEqual(browser.created); // the item went away with its player
  });
});
