// PROTOCOL.md §1 and §6: the /agent namespace, exactly as the hub speaks it.

export type AgentStatus = 'available' | 'away' | 'busy';
export type Role = 'caller' | 'agent' | 'bot' | 'supervisor';
export type AccountRole = 'agent' | 'supervisor' | 'admin';
export type TransferMode = 'cold' | 'warm';
export type MonitorMode = 'listen' | 'whisper' | 'barge';
export const MONITOR_MODES: readonly MonitorMode[] = ['listen', 'whisper', 'barge'];

export interface AgentState {
  agentId: string;
  name: string;
  status: AgentStatus;
  activeCallId: string | null;
  /** §6; absent when the hub does not say (an older hub): a plain agent. */
  role?: AccountRole;
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

/** A turn of the conversation so far (§6 `humanTranscript`). */
export interface TranscriptLine {
  role: Role;
  text: string;
  at: string;
}

/** §6: on a transferred call's `incoming_call`, who hands it over, how and why. */
export interface TransferInfo {
  fromAgentId: string;
  fromName: string;
  mode: TransferMode;
  note: string;
}

/** Who wrote a briefing: the configured LLM endpoint, or the hub's extractive engine. */
export type SummarySource = 'llm' | 'embedded';

/** Extension: the agent briefing on `incoming_call` — who calls, why, what the bot tried. */
export interface Briefing {
  text: string;
  source: SummarySource;
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
  transfer: TransferInfo | null;
  humanTranscript: TranscriptLine[];
  /** null when the hub made none (an older hub, a call it did not see handed off). */
  summary: Briefing | null;
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
  role?: AccountRole;
}

/** §6 `board`: one live call as the supervisors see it. */
export interface BoardCall {
  callId: string;
  threadId: string;
  state: string; // 'ringing' | 'bot' | 'queued' | 'human' | 'ended'
  caller: Caller;
  called: string;
  trunk: string;
  receivedAt: string;
  workerId: string;
  agentId: string | null;
  metadata: Record<string, unknown>;
  /** Queued: seconds since the handoff when the board was sent; else null. */
  waitingSec: number | null;
  monitors: { agentId: string; mode: string }[];
  /** Extension (issue 17): the call's measured quality; null until measured (or an older hub). */
  quality: Quality | null;
}

export interface BoardAgent {
  agentId: string;
  name: string;
  status: AgentStatus;
  activeCallId: string | null;
  role: AccountRole;
}

export interface Board {
  calls: BoardCall[];
  agents: BoardAgent[];
}

/** The `desk_options` answer: what the Transfer dialog and the wrap-up form offer. */
export interface DeskOptions {
  dispositions: string[];
  queues: string[];
  agents: { agentId: string; name: string; status: AgentStatus }[];
}

/** `call_monitored`: to the agent holding the call; `mode` null once nobody monitors it. */
export interface Monitored {
  callId: string;
  mode: MonitorMode | null;
  monitors: number;
}

export type TransferTarget = { agentId: string } | { queue: string } | { number: string };

export interface CallSummary {
  callId: string;
  threadId: string;
  state: 'bot' | 'queued' | 'human' | 'ended';
  caller: Caller;
  called: string;
  agentId: string | null;
}

/** One leg of a call as the media measures it (extension, issue 17 `call_quality`):
 * `leg` is "caller", "agent" or a supervisor leg's id. */
export interface LegQuality {
  leg: string;
  lossPct: number;
  latePct: number;
  jitterMs: number;
  /** Estimated MOS (simplified ITU-T G.107 E-model), 1.0–4.5. */
  mos: number;
}

/** A call's quality: `mos` is the lowest leg's. */
export interface Quality {
  mos: number;
  legs: LegQuality[];
}

/** The `call_quality` event (about every 2 s): to the agent holding the call and the
 * supervisors monitoring it. */
export interface CallQuality extends Quality {
  callId: string;
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

function status(v: unknown): AgentStatus {
  return v === 'available' || v === 'busy' ? v : 'away';
}

function accountRole(v: unknown): AccountRole | undefined {
  return v === 'agent' || v === 'supervisor' || v === 'admin' ? v : undefined;
}

function role(v: unknown): Role | null {
  return v === 'caller' || v === 'agent' || v === 'bot' || v === 'supervisor' ? v : null;
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string' && s !== '') : [];
}

function optionalId(v: unknown): string | null {
  return typeof v === 'string' && v ? v : null;
}

function parseCaller(v: unknown): Caller {
  const caller = isObject(v) ? v : {};
  return { number: str(caller['number']), name: str(caller['name']) };
}

function parseTransferInfo(v: unknown): TransferInfo | null {
  if (!isObject(v)) return null;
  return {
    fromAgentId: str(v['fromAgentId']),
    fromName: str(v['fromName'], str(v['fromAgentId'])),
    mode: v['mode'] === 'warm' ? 'warm' : 'cold',
    note: str(v['note']),
  };
}

export function parseBriefing(v: unknown): Briefing | null {
  if (!isObject(v) || typeof v['text'] !== 'string' || !v['text'].trim()) return null;
  return { text: v['text'], source: v['source'] === 'llm' ? 'llm' : 'embedded' };
}

function parseLines(v: unknown): TranscriptLine[] {
  if (!Array.isArray(v)) return [];
  const lines: TranscriptLine[] = [];
  for (const t of v.filter(isObject)) {
    const r = role(t['role']);
    const text = str(t['text']);
    if (r && text) lines.push({ role: r, text, at: str(t['at']) });
  }
  return lines;
}

export function parseIncoming(v: unknown): IncomingCall | null {
  if (!isObject(v) || typeof v['callId'] !== 'string' || !v['callId']) return null;
  const turns = Array.isArray(v['botTranscript']) ? v['botTranscript'] : [];
  const timeout = Number(v['ringTimeoutSec']);
  return {
    callId: v['callId'],
    threadId: str(v['threadId']),
    caller: parseCaller(v['caller']),
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
    transfer: parseTransferInfo(v['transfer']),
    humanTranscript: parseLines(v['humanTranscript']),
    summary: parseBriefing(v['summary']),
  };
}

export function parseAgentState(v: unknown): AgentState | null {
  if (!isObject(v) || typeof v['agentId'] !== 'string') return null;
  const state: AgentState = {
    agentId: v['agentId'],
    name: str(v['name'], v['agentId']),
    status: status(v['status']),
    activeCallId: optionalId(v['activeCallId']),
  };
  const r = accountRole(v['role']);
  if (r) state.role = r;
  return state;
}

export function parseTranscript(v: unknown): TranscriptEvent | null {
  if (!isObject(v) || typeof v['callId'] !== 'string' || typeof v['text'] !== 'string') return null;
  const r = role(v['role']);
  if (!r) return null;
  return {
    callId: v['callId'],
    threadId: str(v['threadId']),
    role: r,
    text: v['text'],
    final: v['final'] !== false,
    at: str(v['at']),
    seq: typeof v['seq'] === 'number' ? v['seq'] : 0,
  };
}

function parseBoardCall(v: Record<string, unknown>): BoardCall | null {
  if (typeof v['callId'] !== 'string' || !v['callId']) return null;
  const waiting = v['waitingSec'];
  return {
    callId: v['callId'],
    threadId: str(v['threadId']),
    state: str(v['state'], 'bot'),
    caller: parseCaller(v['caller']),
    called: str(v['called']),
    trunk: str(v['trunk']),
    receivedAt: str(v['receivedAt']),
    workerId: str(v['workerId']),
    agentId: optionalId(v['agentId']),
    metadata: isObject(v['metadata']) ? v['metadata'] : {},
    waitingSec: typeof waiting === 'number' && Number.isFinite(waiting) ? waiting : null,
    monitors: (Array.isArray(v['monitors']) ? v['monitors'] : [])
      .filter(isObject)
      .map((m) => ({ agentId: str(m['agentId']), mode: str(m['mode']) })),
    quality: parseQuality(v['quality']),
  };
}

function finite(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

function parseLeg(v: unknown): LegQuality | null {
  if (!isObject(v) || typeof v['leg'] !== 'string' || !v['leg']) return null;
  const mos = finite(v['mos']);
  if (mos === null) return null;
  return {
    leg: v['leg'],
    lossPct: clamp(finite(v['lossPct']) ?? 0, 0, 100),
    latePct: clamp(finite(v['latePct']) ?? 0, 0, 100),
    jitterMs: Math.max(0, finite(v['jitterMs']) ?? 0),
    mos: clamp(mos, 1, 4.5),
  };
}

/** A call's `quality` (board calls, `call_quality`): legs without a name or a MOS are
 * dropped; a missing overall MOS is the lowest leg's; null when there is no MOS at all. */
export function parseQuality(v: unknown): Quality | null {
  if (!isObject(v)) return null;
  const legs = (Array.isArray(v['legs']) ? v['legs'] : []).flatMap((l) => parseLeg(l) ?? []);
  const top = finite(v['mos']);
  const mos = top ?? (legs.length ? Math.min(...legs.map((l) => l.mos)) : null);
  return mos === null ? null : { mos: clamp(mos, 1, 4.5), legs };
}

/** The `call_quality` event: null when it names no call or carries no MOS. */
export function parseCallQuality(v: unknown): CallQuality | null {
  if (!isObject(v) || typeof v['callId'] !== 'string' || !v['callId']) return null;
  const q = parseQuality(v);
  return q ? { callId: v['callId'], ...q } : null;
}

/** The `board` event and the `board_subscribe` answer (§6): null when it is not a board. */
export function parseBoard(v: unknown): Board | null {
  if (!isObject(v) || !Array.isArray(v['calls']) || !Array.isArray(v['agents'])) return null;
  return {
    calls: v['calls'].filter(isObject).flatMap((c) => parseBoardCall(c) ?? []),
    agents: v['agents']
      .filter((a) => isObject(a) && typeof a['agentId'] === 'string' && a['agentId'])
      .map((a) => ({
        agentId: a['agentId'] as string,
        name: str(a['name'], a['agentId'] as string),
        status: status(a['status']),
        activeCallId: optionalId(a['activeCallId']),
        role: accountRole(a['role']) ?? 'agent',
      })),
  };
}

export function parseDeskOptions(v: unknown): DeskOptions {
  const o = isObject(v) ? v : {};
  return {
    dispositions: strings(o['dispositions']),
    queues: strings(o['queues']),
    agents: (Array.isArray(o['agents']) ? o['agents'] : [])
      .filter((a) => isObject(a) && typeof a['agentId'] === 'string' && a['agentId'])
      .map((a) => ({ agentId: a['agentId'] as string, name: str(a['name'], a['agentId'] as string), status: status(a['status']) })),
  };
}

export function parseMonitored(v: unknown): Monitored | null {
  if (!isObject(v) || typeof v['callId'] !== 'string' || !v['callId']) return null;
  const mode = v['mode'];
  return {
    callId: v['callId'],
    mode: MONITOR_MODES.includes(mode as MonitorMode) ? (mode as MonitorMode) : null,
    monitors: typeof v['monitors'] === 'number' ? v['monitors'] : 0,
  };
}
