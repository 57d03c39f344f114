import { TestBed } from '@angular/core/testing';
import { InCall } from './in-call';
import { DeskService } from '../core/desk.service';
import { MediaService } from '../core/media.service';
import { RingerService } from '../core/ringer.service';
import { SOCKET_FACTORY } from '../core/socket';
import { FakeMedia, FakeRinger, FakeSocket, INCOMING } from '../testing/fakes';

describe('InCall', () => {
  it('shows the live transcript with roles, the meters, and drives the call controls', async () => {
    const socket = new FakeSocket();
    const media = new FakeMedia();
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => socket },
        { provide: MediaService, useValue: media },
        { provide: RingerService, useValue: new FakeRinger() },
      ],
    });
    const desk = TestBed.inject(DeskService);
    desk.start('tok');
    socket.open();
    socket.serverEmit('incoming_call', INCOMING);
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 a' }));
    await desk.accept('c1');
    socket.serverEmit('call_connected', { callId: 'c1', at: '2026-11-24T07:00:05Z' });
    const base = { callId: 'c1', threadId: 't-1', at: '2026-11-24T07:00:06Z', seq: 1 };
    socket.serverEmit('transcript', { ...base, role: 'caller', text: 'my order is late', final: true });
    socket.serverEmit('transcript', { ...base, role: 'agent', text: 'let me', final: false });
    media.remoteDbfs.set(-20);
    const fixture = TestBed.createComponent(InCall);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    const q = (id: string) => el.querySelector(`[data-testid="${id}"]`) as HTMLElement;
    expect(q('in-call').dataset['state']).toBe('connected');
    expect(q('call-thread-id').textContent).toContain('t-1');
    const lines = [...el.querySelectorAll('[data-testid="transcript-line"]')] as HTMLElement[];
    expect(lines.map((l) => [l.dataset['role'], l.dataset['final']])).toEqual([
      ['caller', 'true'],
      ['agent', 'false'],
    ]);
    expect(lines[0].textContent).toContain('my order is late');
    expect(q('remote-level').getAttribute('aria-valuenow')).toBe('67');
    q('mute-button').click();
    await fixture.whenStable();
    expect(q('mute-button').getAttribute('aria-pressed')).toBe('true');
    q('hangup-button').click();
    await new Promise((r) => setTimeout(r, 0));
    expect(socket.events('hangup')).toEqual([{ callId: 'c1' }]);
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 65_000);
    socket.serverEmit('call_ended', { callId: 'c1', reason: 'hangup', by: 'agent' });
    await fixture.whenStable();
    expect(q('in-call').dataset['state']).toBe('ended');
    expect(q('call-ended').dataset['by']).toBe('agent');
    expect(q('call-ended').textContent).toContain('Call ended by you');
    expect(q('call-timer').textContent?.trim()).toBe('01:05'); // the call's duration stays shown
    vi.setSystemTime(Date.now() + 60_000);
    desk.now.set(Date.now());
    await fixture.whenStable();
    expect(q('call-timer').textContent?.trim()).toBe('01:05');
    vi.useRealTimers();
    desk.stop();
  });

  it('keeps the briefing the call rang with above the transcript', async () => {
    const socket = new FakeSocket();
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => socket },
        { provide: MediaService, useValue: new FakeMedia() },
        { provide: RingerService, useValue: new FakeRinger() },
      ],
    });
    const desk = TestBed.inject(DeskService);
    desk.start('tok');
    socket.open();
    const summary = { text: 'Ada wants to move her delivery; the bot could not help.', source: 'embedded' };
    socket.serverEmit('incoming_call', { ...INCOMING, summary });
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 a' }));
    await desk.accept('c1');
    const fixture = TestBed.createComponent(InCall);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    const shown = el.querySelector('[data-testid="summary"]') as HTMLElement;
    expect(shown.dataset['source']).toBe('embedded');
    expect(shown.querySelector('[data-testid="summary-text"]')?.textContent).toContain('move her delivery');
    expect(shown.querySelector('[data-testid="summary-source"]')?.textContent?.trim()).toBe('From the bot transcript');
    const transcript = el.querySelector('#transcript-title') as HTMLElement;
    expect(shown.compareDocumentPosition(transcript) & Node.DOCUMENT_POSITION_FOLLOWING).toBeTruthy();
    desk.stop();
  });
});
