import { TestBed } from '@angular/core/testing';
import { LevelMeter, meterValue } from './level-meter';

describe('LevelMeter', () => {
  it('maps -60..0 dBFS to 0..100 and exposes it as an ARIA meter', async () => {
    expect(meterValue(-100)).toBe(0);
    expect(meterValue(-30)).toBe(50);
    expect(meterValue(6)).toBe(100);
    const fixture = TestBed.createComponent(LevelMeter);
    fixture.componentRef.setInput('dbfs', -15);
    fixture.componentRef.setInput('label', 'Caller');
    fixture.componentRef.setInput('testid', 'remote-level');
    await fixture.whenStable();
    const meter = fixture.nativeElement.querySelector('[data-testid="remote-level"]') as HTMLElement;
    expect(meter.getAttribute('role')).toBe('meter');
    expect(meter.getAttribute('aria-valuenow')).toBe('75');
    expect(meter.dataset['dbfs']).toBe('-15.0');
  });
});
