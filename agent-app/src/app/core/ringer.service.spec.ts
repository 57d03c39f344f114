import { RingerService } from './ringer.service';

describe('RingerService', () => {
  afterEach(() => vi.unstubAllGlobals());

  it('raises a system notification only while the tab is in the background', () => {
    const shown: { title: string; tag?: string; closed: boolean }[] = [];
    class FakeNotification {
      static permission = 'granted';
      onclick: (() => void) | null = null;
      entry: { title: string; tag?: string; closed: boolean };
      constructor(title: string, opts: { tag?: string }) {
        this.entry = { title, tag: opts.tag, closed: false };
        shown.push(this.entry);
      }
      close(): void {
        this.entry.closed = true;
      }
    }
    vi.stubGlobal('Notification', FakeNotification);
    vi.stubGlobal('AudioContext', undefined);
    const ringer = new RingerService();
    let hidden = false;
    vi.spyOn(document, 'visibilityState', 'get').mockImplementation(() => (hidden ? 'hidden' : 'visible'));
    ringer.ring('c1', 'Incoming call: Ada', 'agent please');
    expect(shown).toEqual([]);
    hidden = true;
    ringer.ring('c2', 'Incoming call: Bob', '');
    expect(shown).toEqual([{ title: 'Incoming call: Bob', tag: 'c2', closed: false }]);
    ringer.stop('c2', 0);
    expect(shown[0].closed).toBe(true);
  });
});
