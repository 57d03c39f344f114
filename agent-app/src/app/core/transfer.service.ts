import { Injectable, inject, signal } from '@angular/core';
import { DeskService } from './desk.service';
import { DeskOptionsService } from './desk-options.service';
import { TransferMode, TransferTarget, isObject, str } from './protocol';

export interface PendingTransfer {
  callId: string;
  mode: TransferMode;
  /** Who or where to, in words ("Bob", "queue sales"). */
  label: string;
}

export interface FailedTransfer {
  callId: string;
  reason: string;
}

/**
 * Handing the call on (PROTOCOL.md §6 `transfer_call`): the dialog's state, the transfer
 * waiting for its target, and `transfer_failed` (nobody took it: we keep the call).
 */
@Injectable({ providedIn: 'root' })
export class TransferService {
  private readonly desk = inject(DeskService);
  private readonly options = inject(DeskOptionsService);

  /** The call whose Transfer dialog is open. */
  readonly dialogFor = signal<string | null>(null);
  readonly pending = signal<PendingTransfer | null>(null);
  readonly failed = signal<FailedTransfer | null>(null);
  readonly sending = signal(false);
  /** The hub refused the request: shown in the dialog. */
  readonly error = signal<string | null>(null);

  constructor() {
    this.desk.on('transfer_failed', (p) => this.onFailed(p));
    this.desk.onStop(() => {
      this.dialogFor.set(null);
      this.pending.set(null);
      this.failed.set(null);
    });
  }

  /** The Transfer button (Alt+T): for the call in progress, unless one is under way. */
  open(): void {
    const call = this.desk.call();
    if (!call || call.state === 'ended' || this.pending()?.callId === call.callId) return;
    this.dialogFor.set(call.callId);
    this.error.set(null);
    void this.options.load();
  }

  cancel(): void {
    this.dialogFor.set(null);
    this.error.set(null);
  }

  async send(to: TransferTarget, mode: TransferMode, note: string, label: string): Promise<void> {
    const callId = this.dialogFor();
    if (!callId || this.sending()) return;
    this.sending.set(true);
    this.error.set(null);
    const ack = await this.desk.request('transfer_call', { callId, to, mode, note });
    this.sending.set(false);
    if (!ack.ok) {
      this.error.set(`Transfer refused: ${ack.error.message}`);
      return;
    }
    this.dialogFor.set(null);
    this.failed.set(null);
    this.pending.set({ callId, mode, label });
  }

  dismissFailed(): void {
    this.failed.set(null);
  }

  private onFailed(payload: unknown): void {
    if (!isObject(payload) || typeof payload['callId'] !== 'string') return;
    const callId = payload['callId'];
    if (this.pending()?.callId === callId) this.pending.set(null);
    this.failed.set({ callId, reason: str(payload['reason']) });
  }
}
