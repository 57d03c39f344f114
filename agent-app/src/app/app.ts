import { ChangeDetectionStrategy, Component, HostListener, computed, effect, inject } from '@angular/core';
import { AuthService } from './core/auth.service';
import { DeskService, NOTICE_TEXT } from './core/desk.service';
import { TransferService } from './core/transfer.service';
import { BoardView } from './ui/board';
import { History } from './ui/history';
import { IncomingCallCard } from './ui/incoming-call';
import { InCall } from './ui/in-call';
import { Login } from './ui/login';

const CONNECTION_TEXT = {
  connected: 'Connected',
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
  disconnected: 'Offline',
} as const;

@Component({
  selector: 'app-root',
  imports: [Login, IncomingCallCard, InCall, History, BoardView],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (!auth.token()) {
      <app-login [notice]="desk.problem()?.code === 'unauthorized' ? desk.problem()!.message : null" />
    } @else {
      <header class="topbar">
        <span class="brand">hitl-sip</span>
        <span class="agent" data-testid="agent-name">{{ desk.me()?.name ?? '…' }}</span>
        <button type="button" class="status" data-testid="status-toggle"
                [class.on]="desk.available()" [attr.aria-pressed]="desk.available()"
                [disabled]="desk.connection() !== 'connected' || desk.inCall()"
                (click)="desk.setAvailable(!desk.available())"
                [attr.aria-label]="'Availability: ' + statusText() + '. Press to change.'">
          {{ statusText() }}
        </button>
        <span class="conn" data-testid="connection-state" [attr.data-state]="connState()"
              role="status">{{ connText() }}</span>
        <button type="button" class="link" (click)="logout()">Sign out</button>
      </header>
      <main class="desk">
        @if (desk.problem(); as p) {
          <div class="banner error" role="alert" data-testid="error-banner" [attr.data-code]="p.code">
            <span>{{ p.message }}</span>
            <button type="button" class="link" (click)="desk.dismissProblem()" aria-label="Dismiss">✕</button>
          </div>
        }
        <div class="columns">
          <div class="main-col">
            <section aria-live="assertive" aria-label="Incoming calls" class="stack">
              @for (n of desk.notices(); track n.id) {
                <p class="notice" data-testid="call-notice" [attr.data-reason]="n.reason" [attr.data-call-id]="n.callId">
                  {{ noticeText[n.reason] }} · {{ n.caller.number || 'unknown caller' }}
                </p>
              }
              @for (o of desk.offers(); track o.callId) {
                <app-incoming-call [offer]="o" [now]="desk.now()" [disabled]="desk.inCall() || desk.busy()"
                                   (accept)="desk.accept($event)" (decline)="desk.decline($event)" />
              }
            </section>
            <app-in-call />
            @if (!desk.call() && !desk.offers().length) {
              <p class="idle card" role="status">
                {{ desk.available() ? 'Waiting for calls. A ring will sound when one arrives.' : 'You are away: no calls will ring. Press “Away” to become available.' }}
              </p>
            }
          </div>
          <app-history />
        </div>
        @if (desk.supervises()) {
          <app-board />
        }
      </main>
    }
  `,
})
export class App {
  protected readonly auth = inject(AuthService);
  protected readonly desk = inject(DeskService);
  private readonly transfer = inject(TransferService);
  protected readonly noticeText = NOTICE_TEXT;
  private started: string | null = null;

  protected readonly connState = computed(() => {
    const c = this.desk.connection();
    return c === 'connecting' ? 'reconnecting' : c;
  });
  protected readonly connText = computed(() => CONNECTION_TEXT[this.desk.connection()]);
  protected readonly statusText = computed(() => {
    const me = this.desk.me();
    if (me?.status === 'busy') return 'Busy';
    return this.desk.available() ? 'Available' : 'Away';
  });

  constructor() {
    effect(() => {
      const token = this.auth.token();
      if (token && token !== this.started) {
        this.started = token;
        this.desk.start(token);
      } else if (!token && this.started) {
        this.started = null;
        this.desk.stop();
      }
    });
  }

  /** Alt+A accepts the oldest ringing call, Alt+D declines it, Alt+M mutes, Alt+H hangs up,
   * Alt+T opens the Transfer dialog. */
  @HostListener('document:keydown', ['$event'])
  shortcut(ev: KeyboardEvent): void {
    if (!ev.altKey || ev.ctrlKey || ev.metaKey || !this.auth.token()) return;
    const offer = this.desk.offers()[0];
    const key = ev.key.toLowerCase();
    if (key === 'a' && offer) void this.desk.accept(offer.callId);
    else if (key === 'd' && offer) void this.desk.decline(offer.callId);
    else if (key === 'm' && this.desk.inCall()) void this.desk.toggleMute();
    else if (key === 'h' && this.desk.inCall()) void this.desk.hangup();
    else if (key === 't' && this.desk.inCall()) this.transfer.open();
    else return;
    ev.preventDefault();
  }

  logout(): void {
    this.desk.stop();
    this.auth.logout();
  }
}
