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
});
