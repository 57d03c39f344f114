import { Injectable, signal } from '@angular/core';
import { CallSummary, LoginReply, ThreadTurn, isObject, str } from './protocol';

const TOKEN_KEY = 'hitl-sip.token';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** POST /api/login and the agent-token REST calls (PROTOCOL.md §3), on the page's origin. */
@Injectable({ providedIn: 'root' })
export class AuthService {
  readonly token = signal<string | null>(this.restore());

  private restore(): string | null {
    try {
      const raw = sessionStorage.getItem(TOKEN_KEY);
      if (!raw) return null;
      const saved = JSON.parse(raw) as { token?: string; expiresAt?: string };
      if (!saved.token || !saved.expiresAt || Date.parse(saved.expiresAt) <= Date.now()) return null;
      return saved.token;
    } catch {
      return null;
    }
  }

  async login(username: string, password: string): Promise<void> {
    let response: Response;
    try {
      response = await fetch('/api/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ username, password }),
      });
    } catch {
      throw new ApiError(0, 'The server cannot be reached. Check the network and try again.');
    }
    if (response.status === 401) throw new ApiError(401, 'Wrong username or password.');
    if (response.status === 429) {
      throw new ApiError(429, 'Too many attempts. Wait a minute, then try again.');
    }
    if (!response.ok) throw new ApiError(response.status, `Login failed (HTTP ${response.status}).`);
    const body = (await response.json()) as LoginReply;
    sessionStorage.setItem(TOKEN_KEY, JSON.stringify(body));
    this.token.set(body.token);
  }

  /** Forget the token; unless the hub already refused it, end its session there too
   * (POST /api/logout, PROTOCOL.md §6): a token copied from this page stops working. */
  logout(refused = false): void {
    const token = this.token();
    sessionStorage.removeItem(TOKEN_KEY);
    this.token.set(null);
    if (token && !refused) {
      void fetch('/api/logout', {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}` },
      }).catch(() => undefined);
    }
  }

  private async get(path: string): Promise<unknown> {
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${this.token() ?? ''}` },
    });
    if (!response.ok) throw new ApiError(response.status, `${path}: HTTP ${response.status}`);
    return response.json();
  }

  /** `GET /api/recordings/{callId}` (supervisors and admins): the call's recording as a
   * blob; an ApiError with the HTTP status (0: unreachable) when it cannot be had. */
  async recording(callId: string): Promise<Blob> {
    let response: Response;
    try {
      response = await fetch(`/api/recordings/${encodeURIComponent(callId)}`, {
        headers: { Authorization: `Bearer ${this.token() ?? ''}` },
      });
    } catch {
      throw new ApiError(0, 'The server cannot be reached.');
    }
    if (!response.ok) throw new ApiError(response.status, `Recording: HTTP ${response.status}`);
    return response.blob();
  }

  async call(callId: string): Promise<CallSummary | null> {
    const body = await this.get('/api/calls');
    const calls = isObject(body) && Array.isArray(body['calls']) ? body['calls'] : [];
    const found = calls.find((c: unknown) => isObject(c) && c['callId'] === callId);
    return (found as CallSummary | undefined) ?? null;
  }

  async thread(threadId: string): Promise<ThreadTurn[]> {
    const body = await this.get(`/api/threads/${encodeURIComponent(threadId)}`);
    const turns = isObject(body) && Array.isArray(body['turns']) ? body['turns'] : [];
    return turns.filter(isObject).map((t) => ({
      role: t['role'] === 'agent' || t['role'] === 'bot' ? t['role'] : 'caller',
      text: str(t['text']),
      at: str(t['at']),
    }));
  }
}
