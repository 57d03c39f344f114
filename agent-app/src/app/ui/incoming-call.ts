import { ChangeDetectionStrategy, Component, computed, input, output } from '@angular/core';
import { Offer } from '../core/desk.service';
import { BriefingCard } from './briefing';
import { roleLabel } from './format';

@Component({
  selector: 'app-incoming-call',
  imports: [BriefingCard],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <article class="card incoming" data-testid="incoming-call" [attr.data-call-id]="offer().callId"
             [attr.aria-labelledby]="'in-' + offer().callId">
      <header class="incoming-head">
        <span class="ring-dot" aria-hidden="true"></span>
        <h2 [id]="'in-' + offer().callId">{{ offer().transfer ? 'Transferred call' : 'Incoming call' }}</h2>
        <span class="countdown" data-testid="incoming-countdown" [attr.aria-label]="left() + ' seconds left to answer'">
          {{ left() }}s
        </span>
      </header>
      <dl class="facts">
        <dt>Caller</dt>
        <dd><strong data-testid="incoming-caller-number">{{ offer().caller.number || 'unknown number' }}</strong>&nbsp;<span data-testid="incoming-caller-name">{{ offer().caller.name }}</span></dd>
        <dt>Thread</dt>
        <dd><code data-testid="incoming-thread-id">{{ offer().threadId }}</code></dd>
        @if (offer().called) {
          <dt>Called</dt>
          <dd>{{ offer().called }}</dd>
        }
      </dl>
      @if (offer().transfer; as t) {
        <div class="transfer-info" data-testid="transfer-info" [attr.data-mode]="t.mode">
          <p><strong>Transferred by {{ t.fromName || 'another agent' }}</strong>
            · <span data-testid="transfer-info-mode">{{ t.mode === 'warm' ? 'Warm transfer: they stay on the line until you join' : 'Cold transfer' }}</span></p>
          @if (t.note) {
            <p class="transfer-note" data-testid="transfer-info-note"><span class="who">Note</span>{{ t.note }}</p>
          }
        </div>
      }
      @if (offer().summary; as s) {
        <app-briefing [summary]="s" />
      }
      <section aria-label="What the bot learned">
        <h3>Bot conversation</h3>
        <ol class="bot-transcript" data-testid="incoming-bot-transcript">
          @for (t of offer().botTranscript; track $index) {
            <li [attr.data-role]="t.role"><span class="who">{{ label(t.role) }}</span> {{ t.text }}</li>
          } @empty {
            <li class="muted">Nothing said yet.</li>
          }
        </ol>
      </section>
      @if (offer().humanTranscript.length) {
        <section aria-label="What was said with the agent">
          <h3>With {{ offer().transfer?.fromName || 'the agent' }}</h3>
          <ol class="bot-transcript" data-testid="incoming-human-transcript">
            @for (t of offer().humanTranscript; track $index) {
              <li [attr.data-role]="t.role"><span class="who">{{ label(t.role, 'Agent') }}</span> {{ t.text }}</li>
            }
          </ol>
        </section>
      }
      <div class="actions">
        <button class="primary accept" type="button" data-testid="accept-button" aria-keyshortcuts="Alt+A"
                [disabled]="disabled()" (click)="accept.emit(offer().callId)">Accept <kbd>Alt+A</kbd></button>
        <button type="button" data-testid="decline-button" aria-keyshortcuts="Alt+D" (click)="decline.emit(offer().callId)">Decline</button>
      </div>
      <div class="ring-bar" aria-hidden="true"><div [style.width.%]="percent()"></div></div>
    </article>
  `,
})
export class IncomingCallCard {
  readonly offer = input.required<Offer>();
  readonly now = input.required<number>();
  readonly disabled = input(false);
  readonly accept = output<string>();
  readonly decline = output<string>();
  protected readonly left = computed(() =>
    Math.max(0, Math.ceil((this.offer().ringsUntil - this.now()) / 1000)),
  );
  protected readonly percent = computed(() => (100 * this.left()) / this.offer().ringTimeoutSec);
  protected label = roleLabel;
}
