import { TestBed } from '@angular/core/testing';
import { QualityBadge, legText, mosText, qualityLabel, qualityLevel } from './quality-badge';
import { InCall } from './in-call';
import { DeskService } from '../core/desk.service';
import { MediaService } from '../core/media.service';
import { RingerService } from '../core/ringer.service';
import { SOCKET_FACTORY } from '../core/socket';
import { FakeMedia, FakeRinger, FakeSocket, INCOMING } from '../testing/fakes';

const CALLER = { leg: 'caller', lossPct: 5, latePct: 2.25, jitterMs: 30.4, mos: 3.42 };
const AGENT = { leg: 'agent', lossPct: 0, latePct: 0, jitterMs: 1.6, mos: 4.41 };

describe('quality badge thresholds and labels', () => {
  it('is good from MOS 4.0, fair from 3.6, poor below', () => {
    expect([4.5, 4.0, 3.99, 3.6, 3.59, 1].map(qualityLevel)).toEqual(['good', 'good', 'fair', 'fair', 'poor', 'poor']);
  });

  it('shows one decimal rounded down, so the number never contradicts the word', () => {
    expect(mosText(4.33)).toBe('4.3');
    expect(mosText(3.99)).toBe('3.9');
    expect(mosText(4)).toBe('4.0');
    expect(mosText(3.6)).toBe('3.6');
    expect(qualityLabel(4.33)).toBe('Call quality: good, MOS 4.3');
    expect(qualityLabel(3.99)).toBe('Call quality: fair, MOS 3.9');
    expect(qualityLabel(2.1)).toBe('Call quality: poor, MOS 2.1');
  });

  it('describes a leg: loss, late, jitter and MOS', () => {
    expect(legText(CALLER)).toBe('Caller: loss 5 %, late 2.3 %, jitter 30 ms, MOS 3.4');
    expect(legText(AGENT, 'You')).toBe('You: loss 0 %, late 0 %, jitter 2 ms, MOS 4.4');
    expect(legText({ ...AGENT, leg: 'sup-1' })).toContain('Supervisor (sup-1)');
  });
});

describe('QualityBadge', () => {
  async function render(quality: object, inputs: Record<string, unknown> = {}) {
    const fixture = TestBed.createComponent(QualityBadge);
    fixture.componentRef.setInput('quality', quality);
    for (const [k, v] of Object.entries(inputs)) fixture.componentRef.setInput(k, v);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    return { fixture, el, badge: el.querySelector('[data-testid="quality-badge"]') as HTMLButtonElement };
  }

  it('names the quality in words, not only colour, and opens the per-leg detail', async () => {
    const { fixture, el, badge } = await render({ mos: 3.42, legs: [CALLER, AGENT] }, { agentLabel: 'You' });
    expect(badge.tagName).toBe('BUTTON');
    expect(badge.dataset['mos']).toBe('3.42');
    expect(badge.dataset['level']).toBe('poor');
    expect(badge.getAttribute('aria-label')).toBe('Call quality: poor, MOS 3.4');
    expect(badge.textContent).toContain('Poor · MOS 3.4');
    expect(badge.title).toContain('Caller: loss 5 %, late 2.3 %, jitter 30 ms');
    expect(badge.title).toContain('You: loss 0 %');
    expect(badge.getAttribute('aria-expanded')).toBe('false');
    expect(el.querySelector('[data-testid="quality-badge-legs"]')).toBeNull();

    badge.click();
    await fixture.whenStable();
    expect(badge.getAttribute('aria-expanded')).toBe('true');
    const legs = el.querySelector('[data-testid="quality-badge-legs"]') as HTMLTableElement;
    expect(badge.getAttribute('aria-controls')).toBe(legs.id);
    const rows = [...legs.querySelectorAll('tbody tr')] as HTMLElement[];
    expect(rows.map((r) => [r.dataset['leg'], r.dataset['level']])).toEqual([['caller', 'poor'], ['agent', 'good']]);
    expect([...rows[0].querySelectorAll('th, td')].map((c) => c.textContent?.trim())).toEqual([
      'Caller', '5 %', '2.3 %', '30 ms', '3.4',
    ]);
    expect(rows[1].querySelector('th')?.textContent?.trim()).toBe('You');

    badge.click();
    await fixture.whenStable();
    expect(el.querySelector('[data-testid="quality-badge-legs"]')).toBeNull();
  });

  it('takes a testid, and announces its level only when asked', async () => {
    const quiet = await render({ mos: 4.3, legs: [] }, { testid: 'board-quality-c1' });
    expect(quiet.el.querySelector('[data-testid="board-quality-c1"]')?.getAttribute('aria-label')).toBe(
      'Call quality: good, MOS 4.3',
    );
    expect(quiet.el.querySelector('[role="status"]')).toBeNull();
    const loud = await render({ mos: 3.7, legs: [] }, { announce: true });
    expect(loud.el.querySelector('[role="status"]')?.textContent?.trim()).toBe('Call quality fair');
  });
});

describe('InCall quality badge', () => {
  it('stays hidden until the first call_quality, then follows the latest for this call', async () => {
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
    socket.serverEmit('incoming_call', INCOMING);
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 a' }));
    await desk.accept('c1');
    socket.serverEmit('call_connected', { callId: 'c1', at: '2026-11-24T07:00:05Z' });
    const fixture = TestBed.createComponent(InCall);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    const badge = () => el.querySelector('[data-testid="quality-badge"]') as HTMLElement | null;
    expect(badge()).toBeNull();

    socket.serverEmit('call_quality', { callId: 'c1', mos: 4.41, legs: [AGENT, { ...CALLER, mos: 4.41, lossPct: 0 }] });
    await fixture.whenStable();
    expect(badge()?.dataset['mos']).toBe('4.41');
    expect(badge()?.getAttribute('aria-label')).toBe('Call quality: good, MOS 4.4');

    socket.serverEmit('call_quality', { callId: 'other', mos: 1.5, legs: [] }); // not ours
    socket.serverEmit('call_quality', { callId: 'c1', mos: 'bad' }); // garbled
    await fixture.whenStable();
    expect(badge()?.dataset['mos']).toBe('4.41');

    socket.serverEmit('call_quality', { callId: 'c1', mos: 3.42, legs: [CALLER, AGENT] });
    await fixture.whenStable();
    expect(badge()?.dataset['level']).toBe('poor');
    expect(el.querySelector('.in-call [role="status"].sr-only')?.textContent?.trim()).toBe('Call quality poor');

    socket.serverEmit('call_ended', { callId: 'c1', reason: 'hangup', by: 'caller' });
    socket.serverEmit('call_quality', { callId: 'c1', mos: 4.5, legs: [] }); // late: ignored
    await fixture.whenStable();
    expect(badge()?.dataset['mos']).toBe('3.42'); // the last measured stays with the ended call
    desk.stop();
  });
});
