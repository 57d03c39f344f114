import {
  ChangeDetectionStrategy,
  Component,
  ElementRef,
  afterNextRender,
  computed,
  inject,
  signal,
  viewChild,
} from '@angular/core';
import { FormsModule } from '@angular/forms';
import { DeskOptionsService } from '../core/desk-options.service';
import { TransferMode, TransferTarget } from '../core/protocol';
import { TransferService } from '../core/transfer.service';
import { STATUS_TEXT } from './format';

/** The Transfer dialog (§6 `transfer_call`): an agent connected now or a queue, cold or
 * warm, a note for whoever takes it. Escape or Cancel closes it. */
@Component({
  selector: 'app-transfer-dialog',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="transfer-dialog" role="dialog" aria-labelledby="transfer-title" data-testid="transfer-dialog"
         (keydown.escape)="transfer.cancel()">
      <form (ngSubmit)="send()">
        <h3 id="transfer-title">Transfer the call</h3>
        <label for="transfer-target">Transfer to</label>
        <select id="transfer-target" name="target" data-testid="transfer-target" required #targetSelect
                [ngModel]="target()" (ngModelChange)="target.set($event)">
          <option value="" disabled>{{ options.state() === 'loading' ? 'Loading…' : 'Choose an agent or a queue' }}</option>
          @if (options.options().agents.length) {
            <optgroup label="Agents">
              @for (a of options.options().agents; track a.agentId) {
                <option [value]="'agent:' + a.agentId" [disabled]="a.status !== 'available'">
                  {{ a.name }} ({{ statusText[a.status] }})</option>
              }
            </optgroup>
          }
          @if (options.options().queues.length) {
            <optgroup label="Queues">
              @for (q of options.options().queues; track q) {
                <option [value]="'queue:' + q">{{ q }}</option>
              }
            </optgroup>
          }
        </select>
        @if (options.state() === 'failed') {
          <p class="muted" role="status">The list of agents and queues could not be loaded.</p>
        } @else if (options.state() === 'ready' && !options.options().agents.length && !options.options().queues.length) {
          <p class="muted" role="status">No other agent is connected and no queue is configured.</p>
        }
        <fieldset class="choice">
          <legend>Mode</legend>
          <label class="radio">
            <input type="radio" name="mode" value="cold" data-testid="transfer-mode-cold"
                   [ngModel]="mode()" (ngModelChange)="mode.set($event)" />
            Cold: hand the call over and leave when they answer</label>
          <label class="radio">
            <input type="radio" name="mode" value="warm" data-testid="transfer-mode-warm"
                   [ngModel]="mode()" (ngModelChange)="mode.set($event)" />
            Warm: stay on the line with them, then hang up to leave</label>
        </fieldset>
        <label for="transfer-note">Note for the next agent</label>
        <textarea id="transfer-note" name="note" data-testid="transfer-note" rows="3" maxlength="500"
                  [ngModel]="note()" (ngModelChange)="note.set($event)"></textarea>
        @if (transfer.error(); as error) {
          <p class="banner error" role="alert" data-testid="transfer-error">{{ error }}</p>
        }
        <div class="actions">
          <button type="submit" class="primary" data-testid="transfer-send"
                  [disabled]="!target() || transfer.sending()">{{ transfer.sending() ? 'Sending…' : 'Send' }}</button>
          <button type="button" data-testid="transfer-cancel" (click)="transfer.cancel()">Cancel</button>
        </div>
      </form>
    </div>
  `,
})
export class TransferDialog {
  protected readonly transfer = inject(TransferService);
  protected readonly options = inject(DeskOptionsService);
  protected readonly statusText = STATUS_TEXT;
  protected readonly target = signal('');
  protected readonly mode = signal<TransferMode>('cold');
  protected readonly note = signal('');
  private readonly targetSelect = viewChild<ElementRef<HTMLSelectElement>>('targetSelect');

  /** The chosen option as the protocol's target, with its name in words. */
  private readonly chosen = computed((): { to: TransferTarget; label: string } | null => {
    const value = this.target();
    const { agents, queues } = this.options.options();
    if (value.startsWith('agent:')) {
      const agent = agents.find((a) => a.agentId === value.slice(6));
      return agent ? { to: { agentId: agent.agentId }, label: agent.name } : null;
    }
    if (value.startsWith('queue:')) {
      const queue = queues.find((q) => q === value.slice(6));
      return queue ? { to: { queue }, label: `queue ${queue}` } : null;
    }
    return null;
  });

  constructor() {
    afterNextRender(() => this.targetSelect()?.nativeElement.focus());
  }

  protected send(): void {
    const chosen = this.chosen();
    if (chosen) void this.transfer.send(chosen.to, this.mode(), this.note().trim(), chosen.label);
  }
}
