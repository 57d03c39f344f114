import { ChangeDetectionStrategy, Component, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { ApiError, AuthService } from '../core/auth.service';
import { RingerService } from '../core/ringer.service';

@Component({
  selector: 'app-login',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <main class="login">
      <form class="card login-card" (ngSubmit)="submit()" aria-labelledby="login-title">
        <h1 id="login-title">hitl-sip · Agent sign in</h1>
        @if (notice()) {
          <p class="banner warn" role="status">{{ notice() }}</p>
        }
        <label for="username">Username</label>
        <input id="username" name="username" data-testid="login-username" autocomplete="username"
               required [(ngModel)]="username" [disabled]="pending()" />
        <label for="password">Password</label>
        <input id="password" name="password" type="password" data-testid="login-password"
               autocomplete="current-password" required [(ngModel)]="password" [disabled]="pending()" />
        @if (error()) {
          <p class="banner error" role="alert" data-testid="login-error">{{ error() }}</p>
        }
        <button class="primary" type="submit" data-testid="login-submit"
                [disabled]="pending() || !username || !password">
          {{ pending() ? 'Signing in…' : 'Sign in' }}
        </button>
      </form>
    </main>
  `,
})
export class Login {
  private readonly auth = inject(AuthService);
  private readonly ringer = inject(RingerService);
  readonly notice = input<string | null>(null);
  username = '';
  password = '';
  protected readonly pending = signal(false);
  protected readonly error = signal<string | null>(null);

  async submit(): Promise<void> {
    if (!this.username || !this.password || this.pending()) return;
    this.pending.set(true);
    this.error.set(null);
    try {
      await this.auth.login(this.username.trim(), this.password);
      this.password = '';
      this.ringer.requestPermission();
    } catch (e) {
      this.error.set(e instanceof ApiError ? e.message : `Sign in failed: ${String(e)}`);
    } finally {
      this.pending.set(false);
    }
  }
}
