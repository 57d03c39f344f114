import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';
import { Briefing } from '../core/protocol';

const SOURCE_TEXT: Record<Briefing['source'], string> = {
  llm: 'AI summary',
  embedded: 'From the bot transcript',
};

/** The agent briefing (`incoming_call.summary`): shown above the transcript. */
@Component({
  selector: 'app-briefing',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <section class="briefing" data-testid="summary" [attr.data-source]="summary().source" aria-label="Briefing">
      <h3>Briefing <span class="source-tag" data-testid="summary-source">{{ sourceText() }}</span></h3>
      <p data-testid="summary-text">{{ summary().text }}</p>
    </section>
  `,
})
export class BriefingCard {
  readonly summary = input.required<Briefing>();
  protected readonly sourceText = computed(() => SOURCE_TEXT[this.summary().source]);
}
