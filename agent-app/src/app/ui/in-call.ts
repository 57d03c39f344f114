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
import { LevelMeter } from './level-meter';
import { clock, roleLabel } from './format';

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
  imports: [LevelMeter],
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
        </header>
        <dl class="facts">
          <dt>Caller</dt>
          <dd><strong data-testid="call-caller-number">{{ call.caller.number || 'unknown number' }}</strong>
              {{ call.caller.name }}</dd>
          <dt>Thread</dt>
          <dd><code data-testid="call-thread-id">{{ call.threadId }}</code></dd>
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
            <button type="button" class="danger" data-testid="hangup-button" aria-keyshortcuts="Alt+H" (click)="desk.hangup()">
              Hang up</button>
          </div>
        } @else if (call.ended; as ended) {
          <div class="ended" data-testid="call-ended" [attr.data-reason]="ended.reason" [attr.data-by]="ended.by"
               role="status">
            <p>{{ endText(ended.reason, ended.by) }}</p>
            <button type="button" data-testid="dismiss-ended" (click)="desk.dismissEnded()">Close</button>
          </div>
        }
        <h3 id="transcript-title">Live transcript</h3>
        <ol class="transcript" aria-labelledby="transcript-title" aria-live="polite" #transcript>
          @if (call.botTranscript.length) {
            @for (t of call.botTranscript; track $index) {
              <li class="bot-phase" [attr.data-role]="t.role"><span class="who">{{ label(t.role) }}</span>{{ t.text }}</li>
            }
            <li class="divider" aria-hidden="true">— human agent joined —</li>
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
  private readonly list = viewChild<ElementRef<HTMLElement>>('transcript');
  protected readonly label = roleLabel;
  protected readonly endText = endReasonText;

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
  }
}
