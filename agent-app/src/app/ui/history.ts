import { ChangeDetectionStrategy, Component, inject } from '@angular/core';
import { DatePipe } from '@angular/common';
import { DeskService } from '../core/desk.service';
import { clock } from './format';
import { RecordingPlayer } from './recording-player';

@Component({
  selector: 'app-history',
  imports: [DatePipe, RecordingPlayer],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <section class="card history" aria-labelledby="history-title">
      <h2 id="history-title">This session</h2>
      <ol data-testid="history">
        @for (h of desk.history(); track h.callId + h.at) {
          <li data-testid="history-item" [attr.data-call-id]="h.callId">
            <span class="when">{{ h.at | date: 'HH:mm' }}</span>
            <strong>{{ h.caller.number || 'unknown' }}</strong>
            <span class="outcome">{{ h.outcome }}</span>
            @if (h.seconds) {
              <span class="dur">{{ clock(h.seconds) }}</span>
            }
            <code class="thread" title="alive5 thread">{{ h.threadId }}</code>
            @if (desk.supervises()) {
              <app-recording [callId]="h.callId" [who]="h.caller.number || h.caller.name || 'an unknown number'" />
            }
          </li>
        } @empty {
          <li class="muted">No calls yet.</li>
        }
      </ol>
    </section>
  `,
})
export class History {
  protected readonly desk = inject(DeskService);
  protected readonly clock = clock;
}
