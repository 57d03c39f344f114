import { ChangeDetectionStrategy, Component, computed, input, signal } from '@angular/core';
import { LegQuality, Quality } from '../core/protocol';

export type QualityLevel = 'good' | 'fair' | 'poor';

/** Issue 17: good from MOS 4.0, fair from 3.6, poor below (on the value as sent). */
export function qualityLevel(mos: number): QualityLevel {
  return mos >= 4.0 ? 'good' : mos >= 3.6 ? 'fair' : 'poor';
}

const LEVEL_WORD: Record<QualityLevel, string> = { good: 'Good', fair: 'Fair', poor: 'Poor' };
/** Signal bars: the level without colour. */
const LEVEL_ICON: Record<QualityLevel, string> = { good: '▮▮▮', fair: '▮▮▯', poor: '▮▯▯' };

/** One decimal, rounded down: 3.96 shows as 3.9 (fair), never as a "4.0" that is not good. */
export function mosText(mos: number): string {
  return (Math.floor(mos * 10 + 1e-6) / 10).toFixed(1);
}

export function qualityLabel(mos: number): string {
  return `Call quality: ${qualityLevel(mos)}, MOS ${mosText(mos)}`;
}

export function legName(leg: string, agent = 'Agent'): string {
  return leg === 'caller' ? 'Caller' : leg === 'agent' ? agent : `Supervisor (${leg})`;
}

function num(v: number, digits = 1): string {
  return String(Math.round(v * 10 ** digits) / 10 ** digits);
}

export function legText(l: LegQuality, agent = 'Agent'): string {
  return `${legName(l.leg, agent)}: loss ${num(l.lossPct)} %, late ${num(l.latePct)} %, ` +
    `jitter ${num(l.jitterMs, 0)} ms, MOS ${mosText(l.mos)}`;
}

let nextId = 0;

/**
 * The call-quality badge (issue 17): the MOS and a word, with signal bars so colour is not
 * the only cue; a button that opens the per-leg loss, late frames and jitter (also its title).
 */
@Component({
  selector: 'app-quality-badge',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <span class="quality" [attr.data-level]="level()">
      <button type="button" class="quality-badge" [attr.data-testid]="testid()" [attr.data-mos]="quality().mos"
              [attr.data-level]="level()" [attr.aria-label]="label()" [attr.aria-expanded]="open()"
              [attr.aria-controls]="open() ? detailsId : null" [title]="tooltip()" (click)="open.set(!open())">
        <span class="quality-icon" aria-hidden="true">{{ icon() }}</span>
        <span aria-hidden="true">{{ word() }} · MOS {{ mos() }}</span>
      </button>
      @if (announce()) {
        <span class="sr-only" role="status">Call quality {{ level() }}</span>
      }
      @if (open()) {
        <table class="quality-legs" [id]="detailsId" [attr.data-testid]="testid() + '-legs'">
          <caption class="sr-only">Call quality per leg</caption>
          <thead>
            <tr><th scope="col">Leg</th><th scope="col">Loss</th><th scope="col">Late</th>
                <th scope="col">Jitter</th><th scope="col">MOS</th></tr>
          </thead>
          <tbody>
            @for (l of quality().legs; track l.leg) {
              <tr [attr.data-leg]="l.leg" [attr.data-level]="levelOf(l.mos)">
                <th scope="row">{{ name(l.leg) }}</th>
                <td>{{ num(l.lossPct) }} %</td>
                <td>{{ num(l.latePct) }} %</td>
                <td>{{ num(l.jitterMs, 0) }} ms</td>
                <td>{{ mosOf(l.mos) }}</td>
              </tr>
            } @empty {
              <tr><td colspan="5" class="muted">No leg measured yet.</td></tr>
            }
          </tbody>
        </table>
      }
    </span>
  `,
})
export class QualityBadge {
  readonly quality = input.required<Quality>();
  readonly testid = input('quality-badge');
  /** What the "agent" leg is called: "You" on the agent's own call. */
  readonly agentLabel = input('Agent');
  /** Tell a screen reader when the level changes (the agent's own call only, not a board). */
  readonly announce = input(false);

  protected readonly open = signal(false);
  protected readonly detailsId = `quality-legs-${++nextId}`;
  protected readonly level = computed(() => qualityLevel(this.quality().mos));
  protected readonly word = computed(() => LEVEL_WORD[this.level()]);
  protected readonly icon = computed(() => LEVEL_ICON[this.level()]);
  protected readonly mos = computed(() => mosText(this.quality().mos));
  protected readonly label = computed(() => qualityLabel(this.quality().mos));
  protected readonly tooltip = computed(() =>
    [this.label(), ...this.quality().legs.map((l) => legText(l, this.agentLabel()))].join('\n'),
  );
  protected readonly num = num;
  protected readonly mosOf = mosText;
  protected readonly levelOf = qualityLevel;

  protected name(leg: string): string {
    return legName(leg, this.agentLabel());
  }
}
