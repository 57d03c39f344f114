import { TestBed } from '@angular/core/testing';
import { InCall } from './in-call';
import { DeskService } from '../core/desk.service';
import { MediaService } from '../core/media.service';
import { RingerService } from '../core/ringer.service';
import { SOCKET_FACTORY } from '../core/socket';
import { DESK_OPTIONS, FakeMedia, FakeRinger, FakeSocket, INCOMING } from '../testing/fakes';

describe('InCall: supervisor indicator, Transfer, wrap-up', () => {
  let socket: FakeSocket;
  let desk: DeskService;

  beforeEach(async () => {
    socket = new FakeSocket();
    TestBed.configureTestingModule({
      providers: [
        { provide: SOCKET_FACTORY, useValue: () => socket },
        { provide: MediaService, useValue: new FakeMedia() },
        { provide: RingerService, useValue: new FakeRinger() },
      ],
    });
    desk = TestBed.inject(DeskService);
    desk.start('tok');
    socket.open();
    socket.serverEmit('agent_state', { agentId: 'a1', name: 'Alice', status: 'available', activeCallId: null, role: 'agent' });
    socket.replies.set('webrtc_offer', () => ({ ok: true, sdp: 'v=0 a' }));
    socket.replies.set('desk_options', () => DESK_OPTIONS);
    socket.serverEmit('incoming_call', INCOMING);
    await desk.accept('c1');
    socket.serverEmit('call_connected', { callId: 'c1', at: '2026-11-24T07:00:05Z' });
  });

  afterEach(() => desk.stop());

  async function render() {
    const fixture = TestBed.createComponent(InCall);
    await fixture.whenStable();
    const el: HTMLElement = fixture.nativeElement;
    const q = (id: string) => el.querySelector(`[data-testid="${id}"]`) as HTMLElement | null;
    const settle = async () => {
      await new Promise((r) => setTimeout(r, 0));
      await fixture.whenStable();
    };
    return { fixture, el, q, settle };
  }

  it('the supervisor indicator follows call_monitored and hides when nobody monitors', async () => {
    const { q, settle } = await render();
    expect(q('monitor-indicator')).toBeNull();
    socket.serverEmit('call_monitored', { callId: 'c1', mode: 'listen', monitors: 1 });
    await settle();
    expect(q('monitor-indicator')?.textContent).toContain('Supervisor listening');
    expect(q('monitor-indicator')?.dataset['mode']).toBe('listen');
    socket.serverEmit('call_monitored', { callId: 'c1', mode: 'whisper', monitors: 1 });
    await settle();
    expect(q('monitor-indicator')?.textContent).toContain('Supervisor whispering');
    socket.serverEmit('call_monitored', { callId: 'c1', mode: 'barge', monitors: 1 });
    await settle();
    expect(q('monitor-indicator')?.textContent).toContain('Supervisor on the call');
    socket.serverEmit('call_monitored', { callId: 'other', mode: 'listen', monitors: 1 });
    socket.serverEmit('call_monitored', { callId: 'c1', mode: null, monitors: 0 });
    await settle();
    expect(q('monitor-indicator')).toBeNull();
  });

  it("a supervisor's words are labelled in the transcript", async () => {
    const { el, settle } = await render();
    socket.serverEmit('transcript', {
      callId: 'c1', threadId: 't-1', role: 'supervisor', text: 'offer the refund', final: true, at: 'x', seq: 3,
    });
    await settle();
    const line = el.querySelector('[data-testid="transcript-line"][data-role="supervisor"]');
    expect(line?.textContent).toContain('Supervisor');
    expect(line?.textContent).toContain('offer the refund');
  });

  it('the Transfer dialog offers agents and queues and sends the chosen target, mode and note', async () => {
    const { el, q, settle } = await render();
    q('transfer-open')!.click();
    await settle();
    expect(q('transfer-open')?.getAttribute('aria-expanded')).toBe('true');
    expect(socket.events('desk_options')).toEqual([{}]);
    const select = q('transfer-target') as HTMLSelectElement;
    expect(document.activeElement).toBe(select); // the dialog opens on its first field
    const options = [...select.options].map((o) => [o.value, o.disabled]);
    expect(options).toEqual([
      ['', true],
      ['agent:a2', false],
      ['agent:a3', true], // away
      ['queue:sales', false],
      ['queue:support', false],
    ]);
    expect(q('transfer-send')?.hasAttribute('disabled')).toBe(true);
    select.value = 'agent:a2';
    select.dispatchEvent(new Event('change'));
    (q('transfer-mode-warm') as HTMLInputElement).click();
    const note = q('transfer-note') as HTMLTextAreaElement;
    note.value = 'wants a refund ';
    note.dispatchEvent(new Event('input'));
    await settle();
    q('transfer-send')!.click();
    await settle();
    expect(socket.events('transfer_call')).toEqual([
      { callId: 'c1', to: { agentId: 'a2' }, mode: 'warm', note: 'wants a refund' },
    ]);
    expect(q('transfer-dialog')).toBeNull();
    expect(q('transfer-pending')?.dataset['mode']).toBe('warm');
    expect(q('transfer-pending')?.textContent).toContain('Bob');
    expect(q('transfer-open')?.hasAttribute('disabled')).toBe(true);
    expect(el.querySelector('[data-testid="hangup-button"]')).not.toBeNull(); // leaves with the usual hang-up
  });

  it('a queue target is sent as {queue}, cold by default; Cancel and Escape close without sending', async () => {
    const { q, settle } = await render();
    q('transfer-open')!.click();
    await settle();
    q('transfer-cancel')!.click();
    await settle();
    expect(q('transfer-dialog')).toBeNull();
    expect(document.activeElement).toBe(q('transfer-open')); // focus back on its button
    q('transfer-open')!.click();
    await settle();
    q('transfer-dialog')!.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
    await settle();
    expect(q('transfer-dialog')).toBeNull();
    expect(socket.events('transfer_call')).toEqual([]);
    q('transfer-open')!.click();
    await settle();
    const select = q('transfer-target') as HTMLSelectElement;
    select.value = 'queue:support';
    select.dispatchEvent(new Event('change'));
    await settle();
    q('transfer-send')!.click();
    await settle();
    expect(socket.events('transfer_call')).toEqual([{ callId: 'c1', to: { queue: 'support' }, mode: 'cold', note: '' }]);
  });

  it('a refused transfer keeps the dialog open with the reason', async () => {
    socket.replies.set('transfer_call', () => ({ ok: false, error: { code: 'invalid_state', message: 'not yours' } }));
    const { q, settle } = await render();
    q('transfer-open')!.click();
    await settle();
    const select = q('transfer-target') as HTMLSelectElement;
    select.value = 'agent:a2';
    select.dispatchEvent(new Event('change'));
    await settle();
    q('transfer-send')!.click();
    await settle();
    expect(q('transfer-error')?.textContent).toContain('not yours');
    expect(q('transfer-dialog')).not.toBeNull();
  });

  it('transfer_failed tells the agent it still has the call', async () => {
    const { q, settle } = await render();
    q('transfer-open')!.click();
    await settle();
    const select = q('transfer-target') as HTMLSelectElement;
    select.value = 'agent:a2';
    select.dispatchEvent(new Event('change'));
    await settle();
    q('transfer-send')!.click();
    await settle();
    socket.serverEmit('transfer_failed', { callId: 'c1', reason: 'ring_timeout' });
    await settle();
    expect(q('transfer-pending')).toBeNull();
    const failed = q('transfer-failed')!;
    expect(failed.getAttribute('role')).toBe('alert');
    expect(failed.dataset['reason']).toBe('ring_timeout');
    expect(failed.textContent).toContain('Nobody took the transfer (ring timeout). You still have the call.');
    expect(q('transfer-open')?.hasAttribute('disabled')).toBe(false);
    expect(q('in-call')?.dataset['state']).toBe('connected');
    q('transfer-failed-dismiss')!.click();
    await settle();
    expect(q('transfer-failed')).toBeNull();
  });

  it('a completed cold transfer ends the call as transferred', async () => {
    const { q, settle } = await render();
    socket.serverEmit('call_ended', { callId: 'c1', reason: 'transferred', by: 'system' });
    await settle();
    expect(q('call-ended')?.dataset['reason']).toBe('transferred');
    expect(q('call-ended')?.textContent).toContain('Transferred');
  });

  it('after the call, the wrap-up form sends wrap_up with the disposition and note', async () => {
    const { q, settle } = await render();
    expect(q('wrapup-form')).toBeNull();
    socket.serverEmit('call_ended', { callId: 'c1', reason: 'hangup', by: 'caller' });
    await settle();
    expect(q('wrapup-form')).not.toBeNull();
    expect(socket.events('desk_options')).toEqual([{}]);
    const select = q('wrapup-disposition') as HTMLSelectElement;
    expect([...select.options].map((o) => o.value)).toEqual(['', 'resolved', 'callback']);
    expect(q('wrapup-submit')?.hasAttribute('disabled')).toBe(true);
    select.value = 'callback';
    select.dispatchEvent(new Event('change'));
    const note = q('wrapup-note') as HTMLTextAreaElement;
    note.value = 'call back tomorrow';
    note.dispatchEvent(new Event('input'));
    await settle();
    q('wrapup-submit')!.click();
    await settle();
    expect(socket.events('wrap_up')).toEqual([{ callId: 'c1', disposition: 'callback', note: 'call back tomorrow' }]);
    expect(q('wrapup-form')).toBeNull();
    expect(q('wrapup-done')?.textContent).toContain('saved');
  });

  it('Skip closes the wrap-up form without sending; a refusal keeps it with the reason', async () => {
    const { q, settle } = await render();
    socket.replies.set('wrap_up', () => ({ ok: false, error: { code: 'not_found', message: 'unknown call' } }));
    socket.serverEmit('call_ended', { callId: 'c1', reason: 'hangup', by: 'caller' });
    await settle();
    const select = q('wrapup-disposition') as HTMLSelectElement;
    select.value = 'resolved';
    select.dispatchEvent(new Event('change'));
    await settle();
    q('wrapup-submit')!.click();
    await settle();
    expect(q('wrapup-error')?.textContent).toContain('unknown call');
    expect(q('wrapup-form')).not.toBeNull();
    q('wrapup-skip')!.click();
    await settle();
    expect(q('wrapup-form')).toBeNull();
    expect(q('wrapup-done')).toBeNull();
    expect(socket.events('wrap_up').length).toBe(1);
  });
});
