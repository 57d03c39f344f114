import { Injectable, inject, signal } from '@angular/core';
import { DeskService } from './desk.service';
import { DeskOptions, parseDeskOptions } from './protocol';

/** `desk_options`: the dispositions, queues and connected agents the Transfer dialog and
 * the wrap-up form offer. Asked again each time a form opens (agents come and go). */
@Injectable({ providedIn: 'root' })
export class DeskOptionsService {
  private readonly desk = inject(DeskService);
  readonly options = signal<DeskOptions>({ dispositions: [], queues: [], agents: [] });
  readonly state = signal<'idle' | 'loading' | 'ready' | 'failed'>('idle');

  constructor() {
    this.desk.onStop(() => {
      this.options.set({ dispositions: [], queues: [], agents: [] });
      this.state.set('idle');
    });
  }

  async load(): Promise<void> {
    if (this.state() === 'idle' || this.state() === 'failed') this.state.set('loading');
    const ack = await this.desk.request('desk_options', {});
    if (!ack.ok) {
      this.state.set(this.state() === 'ready' ? 'ready' : 'failed');
      return;
    }
    const options = parseDeskOptions(ack);
    const me = this.desk.me()?.agentId;
    this.options.set({ ...options, agents: options.agents.filter((a) => a.agentId !== me) });
    this.state.set('ready');
  }
}
