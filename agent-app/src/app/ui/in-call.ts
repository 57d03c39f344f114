import {
  ChangeDetectionStrategy,
  Component,
  ElementRef,
  computed,
  effect,
  inject,
  viewChild,
} from '@angular/core';
import { DeskService, endReasonText } from '../core/desk.service';
import { MonitorMode } from '../core/protocol';
import { TransferService } from '../core/transfer.service';
import { BriefingCard } from './briefing';
import { LevelMeter } from './level-meter';
import { QualityBadge } from './quality-badge';
import { TransferDialog } from './transfer-dialog';
import { WrapUp } from './wrap-up';
import { clock, roleLabel } from './format';

const MONITOR_TEXT: Record<MonitorMode, string> = {
  listen: 'Supervisor listening',
  whisper: 'Supervisor whispering',
  barge: 'Supervisor on the call',
};

const PEER_TEXT: Record<string, string> = {
  idle: 'No audio',
  new: 'Starting audio',
  connecting: 'Connecting audio',
  connected: 'Audio connected',
  disconnected: 'Audio interrupted',
  failed: 'Audio failed',
  closed: 'Audio closed',
};

@Component({
  selector: 'app-in-call',
  imports: [BriefingCard, LevelMeter, QualityBadge, TransferDialog, WrapUp],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (desk.call(); as call) {
      <section class="card in-call" data-testid="in-call" [attr.data-call-id]="call.callId"
               [attr.data-state]="call.state" aria-labelledby="in-call-title">
        <header class="in-call-head">
          <h2 id="in-call-title">
            {{ call.state === 'ended' ? 'Call ended' : call.state === 'connected' ? 'On call' : 'Connecting…' }}
          </h2>
          <span class="timer" data-testid="call-timer" [attr.data-seconds]="seconds()" aria-label="Call duration">
            {{ clockText() }}
          </span>
          @if (call.quality; as q) {
            <app-quality-badge [quality]="q" agentLabel="You" [announce]="call.state !== 'ended'" />
          }
        </header>
        <div aria-live="polite">
          @if (call.monitor && call.state !== 'ended') {
            <p class="monitor-indicator" data-testid="monitor-indicator" [attr.data-mode]="call.monitor">
              {{ monitorText[call.monitor] }}</p>
          }
        </div>
        <dl class="facts">
          <dt>Caller</dt>
          <dd><strong data-testid="call-caller-number">{{ call.caller.number || 'unknown number' }}</strong>
              {{ call.caller.name }}</dd>
          <dt>Thread</dt>
          <dd><code data-testid="call-thread-id">{{ call.threadId }}</code></dd>
          @if (call.transfer; as t) {
            <dt>From</dt>
            <dd>Transferred by {{ t.fromName || 'another agent' }} ({{ t.mode }})</dd>
          }
          <dt>Audio</dt>
          <dd><span class="peer" data-testid="peer-state" [attr.data-state]="desk.media.peerState()">
            {{ peerText() }}</span></dd>
        </dl>
        @if (call.state !== 'ended') {
          <div class="meters">
            <app-level-meter label="Your microphone" testid="mic-level" [dbfs]="desk.media.micDbfs()" />
            <app-level-meter label="Caller" testid="remote-level" [dbfs]="desk.media.remoteDbfs()" />
          </div>
          <div class="actions">
            <button type="button" data-testid="mute-button" aria-keyshortcuts="Alt+M" [attr.aria-pressed]="call.muted"
                    (click)="desk.toggleMute()">{{ call.muted ? 'Unmute' : 'Mute' }}</button>
            <button type="button" data-testid="return-to-bot-button" (click)="desk.returnToBot()">
              Return to bot</button>
            <button type="button" data-testid="transfer-open" aria-keyshortcuts="Alt+T" aria-haspopup="dialog"
                    #transferButton [attr.aria-expanded]="transfer.dialogFor() === call.callId"
                    [disabled]="transferring()" (click)="transfer.open()">Transfer</button>
            <button type="button" class="danger" data-testid="hangup-button" aria-keyshortcuts="Alt+H" (click)="desk.hangup()">
              Hang up</button>
          </div>
          @if (transfer.dialogFor() === call.callId) {
            <app-transfer-dialog />
          }
          @if (transfer.pending(); as t) {
            @if (t.callId === call.callId) {
              <p class="transfer-status" data-testid="transfer-pending" [attr.data-mode]="t.mode" role="status">
                @if (t.mode === 'warm') {
                  Warm transfer to {{ t.label }}: stay on the line until they join, then Hang up to leave the call to them.
                } @else {
                  Transferring to {{ t.label }}… the call leaves your desk when they answer.
                }
              </p>
            }
          }
          @if (transfer.failed(); as f) {
            @if (f.callId === call.callId) {
              <div class="banner warn" data-testid="transfer-failed" role="alert" [attr.data-reason]="f.reason">
                <span>Nobody took the transfer{{ f.reason ? ' (' + words(f.reason) + ')' : '' }}. You still have the call.</span>
                <button type="button" class="link" data-testid="transfer-failed-dismiss" aria-label="Dismiss"
                        (click)="transfer.dismissFailed()">✕</button>
              </div>
            }
          }
        } @else if (call.ended; as ended) {
          <div class="ended" data-testid="call-ended" [attr.data-reason]="ended.reason" [attr.data-by]="ended.by"
               role="status">
            <p>{{ endText(ended.reason, ended.by) }}</p>
            <button type="button" data-testid="dismiss-ended" (click)="desk.dismissEnded()">Close</button>
          </div>
          <app-wrap-up [callId]="call.callId" />
        }
        @if (call.summary; as s) {
          <app-briefing [summary]="s" />
        }
        <h3 id="transcript-title">Live transcript</h3>
        <ol class="transcript" aria-labelledby="transcript-title" aria-live="polite" #transcript>
          @if (call.botTranscript.length || call.humanTranscript.length) {
            @for (t of call.botTranscript; track $index) {
              <li class="bot-phase" [attr.data-role]="t.role"><span class="who">{{ label(t.role) }}</span>{{ t.text }}</li>
            }
            @for (t of call.humanTranscript; track $index) {
              <li class="bot-phase" data-testid="earlier-line" [attr.data-role]="t.role">
                <span class="who">{{ label(t.role, 'Agent') }}</span>{{ t.text }}</li>
            }
            <li class="divider" aria-hidden="true">{{ call.transfer ? '— you joined —' : '— human agent joined —' }}</li>
          }
          @for (l of call.lines; track $index) {
            <li data-testid="transcript-line" [attr.data-role]="l.role" data-final="true">
              <span class="who">{{ label(l.role) }}</span>{{ l.text }}</li>
          }
          @for (l of interim(); track l.role) {
            <li data-testid="transcript-line" class="interim" [attr.data-role]="l.role" data-final="false">
              <span class="who">{{ label(l.role) }}</span>{{ l.text }}</li>
          }
        </ol>
      </section>
    }
  `,
})
export class InCall {
  protected readonly desk = inject(DeskService);
  protected readonly transfer = inject(TransferService);
  private readonly list = viewChild<ElementRef<HTMLElement>>('transcript');
  private readonly transferButton = viewChild<ElementRef<HTMLButtonElement>>('transferButton');
  protected readonly label = roleLabel;
  protected readonly endText = endReasonText;
  protected readonly monitorText = MONITOR_TEXT;
  protected readonly words = (s: string) => s.replace(/_/g, ' ');

  /** The dialog is open, or a transfer of this call waits for its target. */
  protected readonly transferring = computed(() => {
    const id = this.desk.call()?.callId;
    return this.transfer.dialogFor() === id || this.transfer.pending()?.callId === id;
  });

  protected readonly seconds = computed(() => {
    const call = this.desk.call();
    if (!call) return 0;
    const start = call.connectedAt ?? call.acceptedAt;
    const end = call.endedAt ?? this.desk.now();
    return Math.max(0, Math.floor((end - start) / 1000));
  });
  protected readonly clockText = computed(() => clock(this.seconds()));
  protected readonly peerText = computed(() => PEER_TEXT[this.desk.media.peerState()] ?? this.desk.media.peerState());
  protected readonly interim = computed(() => Object.values(this.desk.call()?.interim ?? {}));

  constructor() {
    effect(() => {
      this.desk.call();
      const el = this.list()?.nativeElement;
      if (el) queueMicrotask(() => (el.scrollTop = el.scrollHeight));
    });
    // the dialog closed (sent, cancelled, Escape): focus goes back to its button
    let open = false;
    effect(() => {
      const now = this.transfer.dialogFor() !== null;
      if (open && !now) queueMicrotask(() => this.transferButton()?.nativeElement.focus());
      open = now;
    });
  }
}
