// PROTOCOL.md §1: the /agent namespace, exactly as the hub speaks it.

export type AgentStatus = 'available' | 'away' | 'busy';
export type Role = 'caller' | 'agent' | 'bot';

export interface AgentState {
  agentId: string;
  name: string;
  status: AgentStatus;
  activeCallId: string | null;
}

export interface Caller {
  number: string;
  name: string;
}

export interface BotTurn {
  role: 'caller' | 'bot';
  text: string;
  at: string;
}

export interface IncomingCall {
  callId: string;
  threadId: string;
  caller: Caller;
  called: string;
  trunk: string;
  receivedAt: string;
  ringTimeoutSec: number;
  botTranscript: BotTurn[];
  metadata: Record<string, unknown>;
}

export type CancelReason = 'answered_elsewhere' | 'caller_hangup' | 'ring_timeout' | 'declined';

export interface CallCancelled {
  callId: string;
  reason: CancelReason;
}

export interface CallConnected {
  callId: string;
  at: string;
}

export interface TranscriptEvent {
  callId: string;
  threadId: string;
  role: Role;
  text: string;
  final: boolean;
  at: string;
  seq: number;
}

export interface CallEnded {
  callId: string;
  reason: string;
  by: 'caller' | 'agent' | 'system';
}

export interface AckError {
  code: string;
  message: string;
}

export type Ack<T extends object = object> = ({ ok: true } & T) | { ok: false; error: AckError };

export interface LoginReply {
  token: string;
  expiresAt: string;
}

export interface CallSummary {
  callId: string;
  threadId: string;
  state: 'bot' | 'queued' | 'human' | 'ended';
  caller: Caller;
  called: string;
  agentId: string | null;
}

export interface ThreadTurn {
  role: Role;
  text: string;
  at: string;
}

/** Shape checks for what arrives from the socket: a garbled event is dropped, not trusted. */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function str(v: unknown, fallback = ''): string {
  return typeof v === 'string' ? v : fallback;
}

export function parseIncoming(v: unknown): IncomingCall | null {
  if (!isObject(v) || typeof v['callId'] !== 'string' || !v['callId']) return null;
  const caller = isObject(v['caller']) ? v['caller'] : {};
  const turns = Array.isArray(v['botTranscript']) ? v['botTranscript'] : [];
  const timeout = Number(v['ringTimeoutSec']);
  return {
    callId: v['callId'],
    threadId: str(v['threadId']),
    caller: { number: str(caller['number']), name: str(caller['name']) },
    called: str(v['called']),
    trunk: str(v['trunk']),
    receivedAt: str(v['receivedAt']),
    ringTimeoutSec: Number.isFinite(timeout) && timeout > 0 ? timeout : 30,
    botTranscript: turns
      .filter(isObject)
      .map((t) => ({
        role: t['role'] === 'bot' ? ('bot' as const) : ('caller' as const),
        text: str(t['text']),
        at: str(t['at']),
      }))
      .filter((t) => t.text),
    metadata: isObject(v['metadata']) ? v['metadata'] : {},
  };
}

export function parseAgentState(v: unknown): AgentState | null {
  if (!isObject(v) || typeof v['agentId'] !== 'string') return null;
  const status = v['status'];
  return {
    agentId: v['agentId'],
    name: str(v['name'], v['agentId']),
    status: status === 'available' || status === 'busy' ? status : 'away',
    activeCallId: typeof v['activeCallId'] === 'string' && v['activeCallId'] ? v['activeCallId'] : null,
  };
}

export function parseTranscript(v: unknown): TranscriptEvent | null {
  if (!isObject(v) || typeof v['callId'] !== 'string' || typeof v['text'] !== 'string') return null;
  const role = v['role'];
  if (role !== 'caller' && role !== 'agent' && role !== 'bot') return null;
  return {
    callId: v['callId'],
    threadId: str(v['threadId']),
    role,
    text: v['text'],
    final: v['final'] !== false,
    at: str(v['at']),
    seq: typeof v['seq'] === 'number' ? v['seq'] : 0,
  };
}
