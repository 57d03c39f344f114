import { TestBed } from '@angular/core/testing';
import { IncomingCallCard } from './incoming-call';
import { INCOMING } from '../testing/fakes';

describe('IncomingCallCard', () => {
  it('shows caller, thread, bot transcript and the seconds left, and emits accept/decline', async () => {
    const fixture = TestBed.createComponent(IncomingCallCard);
    const now = Date.now();
    fixture.componentRef.setInput('offer', { ...INCOMING, ringsUntil: now + 12_300 });
    fixture.componentRef.setInput('now', now);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    const q = (id: string) => el.querySelector(`[data-testid="${id}"]`) as HTMLElement;
    expect(q('incoming-call').dataset['callId']).toBe('c1');
    expect(q('incoming-caller-number').textContent).toContain('+14155550100');
    expect(q('incoming-caller-name').textContent).toContain('Ada');
    expect(q('incoming-thread-id').textContent).toContain('t-1');
    expect(q('incoming-bot-transcript').textContent).toContain('agent please');
    expect(q('incoming-countdown').textContent?.trim()).toBe('13s');
    const accepted: string[] = [];
    const declined: string[] = [];
    fixture.componentInstance.accept.subscribe((id) => accepted.push(id));
    fixture.componentInstance.decline.subscribe((id) => declined.push(id));
    q('accept-button').click();
    q('decline-button').click();
    expect(accepted).toEqual(['c1']);
    expect(declined).toEqual(['c1']);
  });

  it('a transferred call says who transferred it, how, the note, and the conversation so far', async () => {
    const fixture = TestBed.createComponent(IncomingCallCard);
    const now = Date.now();
    fixture.componentRef.setInput('offer', {
      ...INCOMING,
      ringsUntil: now + 20_000,
      transfer: { fromAgentId: 'a1', fromName: 'Alice', mode: 'warm', note: 'wants a refund' },
      humanTranscript: [
        { role: 'agent', text: 'let me get billing', at: '2026-11-24T07:01:00Z' },
        { role: 'caller', text: 'ok thanks', at: '2026-11-24T07:01:02Z' },
      ],
    });
    fixture.componentRef.setInput('now', now);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    const q = (id: string) => el.querySelector(`[data-testid="${id}"]`) as HTMLElement;
    expect(q('transfer-info').textContent).toContain('Transferred by Alice');
    expect(q('transfer-info').dataset['mode']).toBe('warm');
    expect(q('transfer-info-mode').textContent).toContain('Warm transfer');
    expect(q('transfer-info-note').textContent).toContain('wants a refund');
    expect(q('incoming-bot-transcript').textContent).toContain('agent please');
    const human = [...q('incoming-human-transcript').querySelectorAll('li')].map((li) => li.textContent?.trim());
    expect(human).toEqual(['Agent let me get billing', 'Caller ok thanks']);
  });

  it('shows the briefing above the bot transcript, with its source as a label', async () => {
    const fixture = TestBed.createComponent(IncomingCallCard);
    fixture.componentRef.setInput('offer', {
      ...INCOMING,
      ringsUntil: Date.now() + 5000,
      summary: { text: 'Ada (+14155550100) wants a refund; the bot could not help.', source: 'llm' },
    });
    fixture.componentRef.setInput('now', Date.now());
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    const summary = el.querySelector('[data-testid="summary"]') as HTMLElement;
    expect(summary.dataset['source']).toBe('llm');
    expect(summary.querySelector('[data-testid="summary-text"]')?.textContent).toContain('wants a refund');
    expect(summary.querySelector('[data-testid="summary-source"]')?.textContent?.trim()).toBe('AI summary');
    const transcript = el.querySelector('[data-testid="incoming-bot-transcript"]') as HTMLElement;
    expect(summary.compareDocumentPosition(transcript) & Node.DOCUMENT_POSITION_FOLLOWING).toBeTruthy();
    fixture.componentRef.setInput('offer', {
      ...INCOMING,
      ringsUntil: Date.now() + 5000,
      summary: { text: 'Ada is calling about a refund.', source: 'embedded' },
    });
    await fixture.whenStable();
    expect(el.querySelector('[data-testid="summary-source"]')?.textContent?.trim()).toBe('From the bot transcript');
  });

  it('an ordinary call shows no transfer information', async () => {
    const fixture = TestBed.createComponent(IncomingCallCard);
    fixture.componentRef.setInput('offer', { ...INCOMING, ringsUntil: Date.now() + 5000 });
    fixture.componentRef.setInput('now', Date.now());
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    expect(el.querySelector('[data-testid="transfer-info"]')).toBeNull();
    expect(el.querySelector('[data-testid="incoming-human-transcript"]')).toBeNull();
    expect(el.querySelector('[data-testid="summary"]')).toBeNull(); // none: nothing shown
  });
});
