import { Injectable, computed, inject, signal } from '@angular/core';
import { DeskService } from './desk.service';

/** After a call it held, the agent's disposition and note (PROTOCOL.md §6 `wrap_up`). */
@Injectable({ providedIn: 'root' })
export class WrapUpService {
  private readonly desk = inject(DeskService);
  /** Calls wrapped up or skipped in this session. */
  readonly done = signal<ReadonlyMap<string, 'sent' | 'skipped'>>(new Map());
  readonly sending = signal(false);
  readonly error = signal<string | null>(null);

  /** The ended call still waiting for its wrap-up, if any. */
  readonly due = computed(() => {
    const call = this.desk.call();
    return call?.state === 'ended' && !this.done().has(call.callId) ? call.callId : null;
  });

  async submit(callId: string, disposition: string, note: string): Promise<void> {
    if (this.sending() || !disposition) return;
    this.sending.set(true);
    this.error.set(null);
    const ack = await this.desk.request('wrap_up', { callId, disposition, note });
    this.sending.set(false);
    if (ack.ok) this.mark(callId, 'sent');
    else this.error.set(`Wrap-up not saved: ${ack.error.message}`);
  }

  skip(callId: string): void {
    this.error.set(null);
    this.mark(callId, 'skipped');
  }

  private mark(callId: string, how: 'sent' | 'skipped'): void {
    this.done.update((m) => new Map(m).set(callId, how));
  }
}
