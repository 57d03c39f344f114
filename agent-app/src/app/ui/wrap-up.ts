import { ChangeDetectionStrategy, Component, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { DeskOptionsService } from '../core/desk-options.service';
import { WrapUpService } from '../core/wrap-up.service';

/** After a call: the disposition and a note (§6 `wrap_up`), or Skip. */
@Component({
  selector: 'app-wrap-up',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (wrapUp.done().get(callId()) === 'sent') {
      <p class="wrapup-done" data-testid="wrapup-done" role="status">Wrap-up saved.</p>
    } @else if (wrapUp.due() === callId()) {
      <form class="wrapup" data-testid="wrapup-form" aria-labelledby="wrapup-title" (ngSubmit)="submit()">
        <h3 id="wrapup-title">Wrap-up</h3>
        <label for="wrapup-disposition">Disposition</label>
        @if (options.options().dispositions.length) {
          <select id="wrapup-disposition" name="disposition" data-testid="wrapup-disposition" required
                  [ngModel]="disposition()" (ngModelChange)="disposition.set($event)">
            <option value="" disabled>Choose a disposition</option>
            @for (d of options.options().dispositions; track d) {
              <option [value]="d">{{ d }}</option>
            }
          </select>
        } @else if (options.state() === 'loading') {
          <select id="wrapup-disposition" name="disposition" data-testid="wrapup-disposition" disabled>
            <option>Loading…</option>
          </select>
        } @else {
          <input id="wrapup-disposition" name="disposition" data-testid="wrapup-disposition" required maxlength="64"
                 [ngModel]="disposition()" (ngModelChange)="disposition.set($event)" />
        }
        <label for="wrapup-note">Note</label>
        <textarea id="wrapup-note" name="note" data-testid="wrapup-note" rows="3" maxlength="2000"
                  [ngModel]="note()" (ngModelChange)="note.set($event)"></textarea>
        @if (wrapUp.error(); as error) {
          <p class="banner error" role="alert" data-testid="wrapup-error">{{ error }}</p>
        }
        <div class="actions">
          <button type="submit" class="primary" data-testid="wrapup-submit"
                  [disabled]="!disposition().trim() || wrapUp.sending()">Submit</button>
          <button type="button" data-testid="wrapup-skip" (click)="wrapUp.skip(callId())">Skip</button>
        </div>
      </form>
    }
  `,
})
export class WrapUp {
  readonly callId = input.required<string>();
  protected readonly wrapUp = inject(WrapUpService);
  protected readonly options = inject(DeskOptionsService);
  protected readonly disposition = signal('');
  protected readonly note = signal('');

  constructor() {
    if (this.options.state() !== 'ready') void this.options.load();
  }

  protected submit(): void {
    void this.wrapUp.submit(this.callId(), this.disposition().trim(), this.note().trim());
  }
}
