import { describeMediaError, levelDbfs } from './media.service';

describe('describeMediaError', () => {
  const named = (name: string) => Object.assign(new Error('x'), { name });

  it('maps getUserMedia failures to errors a person can act on', () => {
    expect(describeMediaError(named('NotAllowedError')).code).toBe('mic_denied');
    expect(describeMediaError(named('NotAllowedError')).message).toMatch(/permission denied/i);
    expect(describeMediaError(named('NotFoundError')).code).toBe('no_mic');
    expect(describeMediaError(named('NotFoundError')).message).toMatch(/no microphone/i);
    expect(describeMediaError(named('NotReadableError')).code).toBe('mic_busy');
    expect(describeMediaError('weird').code).toBe('webrtc_failed');
  });
});

describe('levelDbfs', () => {
  it('is -100 for silence and the RMS in dBFS otherwise', () => {
    expect(levelDbfs(new Float32Array(480))).toBe(-100);
    const full = new Float32Array(480).fill(1);
    expect(levelDbfs(full)).toBeCloseTo(0, 5);
    const sine = Float32Array.from({ length: 4800 }, (_, i) => 0.5 * Math.sin((2 * Math.PI * 440 * i) / 48000));
    expect(levelDbfs(sine)).toBeCloseTo(20 * Math.log10(0.5 / Math.SQRT2), 1);
  });
});
