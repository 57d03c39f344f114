import { InjectionToken } from '@angular/core';
import { io } from 'socket.io-client';

/** The part of a socket.io-client Socket the dashboard uses (a seam for unit tests). */
export interface AgentSocket {
  readonly connected: boolean;
  readonly active: boolean;
  auth: unknown;
  on(event: string, listener: (...args: any[]) => void): unknown;
  emit(event: string, ...args: unknown[]): unknown;
  timeout(ms: number): { emitWithAck(event: string, ...args: unknown[]): Promise<unknown> };
  connect(): unknown;
  disconnect(): unknown;
  readonly io: { on(event: string, listener: (...args: any[]) => void): unknown };
}

export type SocketFactory = (token: string) => AgentSocket;

/** Opens `io(BASE + "/agent", {auth: {token}})` on the page's own origin (the hub). */
export const SOCKET_FACTORY = new InjectionToken<SocketFactory>('SOCKET_FACTORY', {
  providedIn: 'root',
  factory: () => (token: string) =>
    io('/agent', {
      auth: { token },
      transports: ['websocket', 'polling'],
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
    }) as unknown as AgentSocket,
});
