import {
  ChangeDetectionStrategy,
  Component,
  DestroyRef,
  ElementRef,
  effect,
  inject,
  input,
  signal,
  viewChild,
} from '@angular/core';
import { ApiError, AuthService } from '../core/auth.service';

type State = 'idle' | 'loading' | 'ready' | 'missing' | 'error';

export function recordingProblem(status: number): string {
  if (status === 404) return 'No recording for this call';
  if (status === 403) return 'Recordings are for supervisors and admins.';
  if (status === 401) return 'Your session has expired: log in again to play recordings.';
  if (status === 0) return 'The server cannot be reached. Try again.';
  return `Could not load the recording (HTTP ${status}). Try again.`;
}

/**
 * "Play recording" (issue 17): `GET /api/recordings/{callId}` with the dashboard's token,
 * played in the page from an object URL (the CSP allows `media-src blob:`); the URL is
 * revoked on Close, on a new fetch and when the player goes away.
 */
@Component({
  selector: 'app-recording',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <span class="recording" [attr.data-state]="state()">
      @if (url(); as src) {
        <audio controls tabindex="0" #audio [src]="src" [attr.data-testid]="'recording-audio-' + callId()"
               [attr.aria-label]="'Recording of the call from ' + who()"></audio>
        <button type="button" class="link" [attr.data-testid]="'recording-close-' + callId()"
                [attr.aria-label]="'Close the recording of the call from ' + who()" (click)="close()">Close</button>
      } @else {
        <button type="button" class="recording-play" #playButton [attr.data-testid]="'recording-play-' + callId()"
                [attr.aria-label]="'Play recording of the call from ' + who()"
                [attr.aria-disabled]="state() === 'loading'" [attr.aria-busy]="state() === 'loading'"
                (click)="play()">Play recording</button>
      }
      <span class="recording-message" role="status" [attr.data-testid]="'recording-message-' + callId()"
            [class.warn]="state() === 'error'">{{ message() }}</span>
    </span>
  `,
})
export class RecordingPlayer {
  private readonly auth = inject(AuthService);
  readonly callId = input.required<string>();
  /** Who called: names the call in the buttons' accessible names. */
  readonly who = input('an unknown number');

  protected readonly state = signal<State>('idle');
  protected readonly url = signal<string | null>(null);
  protected readonly message = signal('');
  private readonly audio = viewChild<ElementRef<HTMLAudioElement>>('audio');
  private readonly playButton = viewChild<ElementRef<HTMLButtonElement>>('playButton');
  private destroyed = false;
  private started = false;
  private refocus = false;

  constructor() {
    inject(DestroyRef).onDestroy(() => {
      this.destroyed = true;
      this.revoke();
    });
    // the audio has just appeared: focus its controls and start it (the click was the gesture)
    effect(() => {
      const el = this.audio()?.nativeElement;
      if (!el || this.started) return;
      this.started = true;
      el.focus();
      try {
        void Promise.resolve(el.play()).catch(() => undefined);
      } catch {
        // no autoplay here: the controls are focused, Space plays
      }
    });
    // Close removed the focused button: focus goes back to Play
    effect(() => {
      const button = this.playButton()?.nativeElement;
      if (button && this.refocus) {
        this.refocus = false;
        button.focus();
      }
    });
  }

  async play(): Promise<void> {
    if (this.state() === 'loading') return;
    this.revoke();
    this.state.set('loading');
    this.message.set('Loading the recording…');
    let blob: Blob;
    try {
      blob = await this.auth.recording(this.callId());
    } catch (e) {
      if (this.destroyed) return;
      const status = e instanceof ApiError ? e.status : 0;
      this.state.set(status === 404 ? 'missing' : 'error');
      this.message.set(recordingProblem(status));
      return;
    }
    if (this.destroyed) return;
    this.started = false;
    this.url.set(URL.createObjectURL(blob));
    this.state.set('ready');
    this.message.set('');
  }

  close(): void {
    this.refocus = true;
    this.revoke();
    this.state.set('idle');
    this.message.set('');
  }

  private revoke(): void {
    const url = this.url();
    if (url) URL.revokeObjectURL(url);
    this.url.set(null);
  }
}
