import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';

/** −60 dBFS → 0, 0 dBFS → 100. */
export function meterValue(dbfs: number): number {
  return Math.round(Math.min(100, Math.max(0, ((dbfs + 60) / 60) * 100)));
}

@Component({
  selector: 'app-level-meter',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="meter">
      <span class="meter-label" [id]="testid() + '-label'">{{ label() }}</span>
      <div
        class="meter-track"
        role="meter"
        aria-valuemin="0"
        aria-valuemax="100"
        [attr.aria-valuenow]="value()"
        [attr.aria-labelledby]="testid() + '-label'"
        [attr.data-testid]="testid()"
        [attr.data-dbfs]="dbfs().toFixed(1)"
      >
        <div class="meter-fill" [class.hot]="value() > 90" [style.width.%]="value()"></div>
      </div>
    </div>
  `,
})
export class LevelMeter {
  readonly dbfs = input.required<number>();
  readonly label = input.required<string>();
  readonly testid = input.required<string>();
  protected readonly value = computed(() => meterValue(this.dbfs()));
}
