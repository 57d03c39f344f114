import { ChangeDetectionStrategy, Component, computed, inject } from '@angular/core';
import { BoardService } from '../core/board.service';
import { DeskService } from '../core/desk.service';
import { BoardCall, MONITOR_MODES, MonitorMode } from '../core/protocol';
import { DatePipe } from '@angular/common';
import { LevelMeter } from './level-meter';
import { QualityBadge, mosText, qualityLevel } from './quality-badge';
import { RecordingPlayer } from './recording-player';
import { STATUS_TEXT, clock } from './format';

const MODE_TEXT: Record<MonitorMode, string> = { listen: 'Listen', whisper: 'Whisper', barge: 'Barge' };
const MONITORING_TEXT: Record<MonitorMode, string> = {
  listen: 'Listening (nobody hears you)',
  whisper: 'Whispering (only the agent hears you)',
  barge: 'On the call (the caller and the agent hear you)',
};
const STATE_TEXT: Record<string, string> = {
  ringing: 'Ringing',
  bot: 'With the bot',
  queued: 'Waiting',
  human: 'With an agent',
  ended: 'Ended',
};

/** The supervisors' view (PROTOCOL.md §6): waiting calls, agents, live calls, monitoring. */
@Component({
  selector: 'app-board',
  imports: [DatePipe, LevelMeter, QualityBadge, RecordingPlayer],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <section class="card board" data-testid="board" aria-labelledby="board-title">
      <h2 id="board-title">Supervision</h2>
      @if (board.monitoring(); as m) {
        <div class="monitoring" data-testid="monitor-status" [attr.data-call-id]="m.callId" [attr.data-mode]="m.mode"
             role="status">
          <p><strong>{{ monitoringText[m.mode] }}</strong> · {{ callerOf(m.callId) }}
            · <span class="peer" [attr.data-state]="board.media.peerState()">{{ peerText() }}</span></p>
          <app-level-meter label="Monitored call" testid="monitor-level" [dbfs]="board.media.remoteDbfs()" />
        </div>
      }
      @if (!board.board()) {
        <p class="muted" role="status">Loading the board…</p>
      } @else {
        <h3 id="board-waiting-title">Waiting calls</h3>
        <ul class="board-list" data-testid="board-waiting" aria-labelledby="board-waiting-title">
          @for (c of board.waiting(); track c.callId) {
            <li [attr.data-testid]="'board-waiting-' + c.callId" [attr.data-call-id]="c.callId">
              <strong>{{ c.caller.number || 'unknown number' }}</strong> {{ c.caller.name }}
              <span class="muted">{{ stateText(c.state) }}</span>
              <span class="wait" [attr.aria-label]="'Waiting ' + waitText(c)">{{ waitText(c) }}</span>
            </li>
          } @empty {
            <li class="muted">Nobody is waiting.</li>
          }
        </ul>

        <h3 id="board-agents-title">Agents</h3>
        <table class="board-table" data-testid="board-agents" aria-labelledby="board-agents-title">
          <thead><tr><th scope="col">Agent</th><th scope="col">Status</th><th scope="col">Current call</th></tr></thead>
          <tbody>
            @for (a of agents(); track a.agentId) {
              <tr [attr.data-testid]="'board-agent-' + a.agentId" [attr.data-status]="a.status">
                <th scope="row">{{ a.name }}@if (a.role !== 'agent') { <span class="muted"> ({{ a.role }})</span> }</th>
                <td>{{ statusText[a.status] }}</td>
                <td>{{ a.activeCallId ? callerOf(a.activeCallId) : '—' }}</td>
              </tr>
            } @empty {
              <tr><td colspan="3" class="muted">No agent is connected.</td></tr>
            }
          </tbody>
        </table>

        <h3 id="board-calls-title">Live calls</h3>
        <table class="board-table" data-testid="board-calls" aria-labelledby="board-calls-title">
          <thead>
            <tr><th scope="col">Caller</th><th scope="col">State</th><th scope="col">Agent</th>
                <th scope="col">Duration</th><th scope="col">Quality</th><th scope="col">Monitor</th></tr>
          </thead>
          <tbody>
            @for (c of board.live(); track c.callId) {
              <tr [attr.data-testid]="'board-call-' + c.callId" [attr.data-state]="c.state">
                <th scope="row">{{ c.caller.number || 'unknown number' }} {{ c.caller.name }}</th>
                <td>{{ stateText(c.state) }}@if (c.monitors.length) {
                  <span class="muted"> · {{ c.monitors.length }} supervising</span> }</td>
                <td>{{ agentName(c.agentId) }}</td>
                <td class="dur">{{ duration(c) }}</td>
                <td>
                  @if (board.qualities()[c.callId]; as q) {
                    <app-quality-badge [quality]="q" [testid]="'board-quality-' + c.callId" />
                  } @else {
                    <span class="muted" [attr.data-testid]="'board-quality-' + c.callId">—<span class="sr-only">
                      quality not measured</span></span>
                  }
                </td>
                <td>
                  @if (c.state === 'human' && c.agentId !== me()) {
                    <div class="monitor-buttons" role="group" [attr.aria-label]="'Monitor the call from ' + who(c)">
                      @for (mode of modes; track mode) {
                        <button type="button" [attr.data-testid]="'monitor-' + mode"
                                [attr.aria-pressed]="modeOf(c.callId) === mode" [class.on]="modeOf(c.callId) === mode"
                                [disabled]="board.pending()" (click)="board.monitor(c.callId, mode)">{{ modeText[mode] }}</button>
                      }
                      <button type="button" data-testid="monitor-stop" [disabled]="!modeOf(c.callId)"
                              [attr.aria-label]="'Stop monitoring the call from ' + who(c)"
                              (click)="board.stop()">Stop</button>
                    </div>
                  }
                </td>
              </tr>
            } @empty {
              <tr><td colspan="6" class="muted">No live call.</td></tr>
            }
          </tbody>
        </table>

        <h3 id="board-ended-title">Recently ended</h3>
        <ul class="board-list" data-testid="board-ended" aria-labelledby="board-ended-title">
          @for (e of board.ended(); track e.call.callId) {
            <li [attr.data-testid]="'board-ended-' + e.call.callId" [attr.data-call-id]="e.call.callId">
              <strong>{{ e.call.caller.number || 'unknown number' }}</strong> {{ e.call.caller.name }}
              <span class="muted">{{ e.call.agentId ? agentName(e.call.agentId) + ' · ' : '' }}ended {{ e.endedAt | date: 'HH:mm' }}</span>
              @if (e.quality; as q) {
                <span class="muted" [attr.data-mos]="q.mos">{{ qualityText(q.mos) }}</span>
              }
              <app-recording [callId]="e.call.callId" [who]="who(e.call)" />
            </li>
          } @empty {
            <li class="muted">No call has ended since the board opened.</li>
          }
        </ul>
      }
    </section>
  `,
})
export class BoardView {
  protected readonly board = inject(BoardService);
  private readonly desk = inject(DeskService);
  protected readonly modes = MONITOR_MODES;
  protected readonly modeText = MODE_TEXT;
  protected readonly monitoringText = MONITORING_TEXT;
  protected readonly statusText = STATUS_TEXT;
  protected readonly me = computed(() => this.desk.me()?.agentId ?? null);
  protected readonly agents = computed(() => this.board.board()?.agents ?? []);
  protected readonly peerText = computed(() => {
    const s = this.board.media.peerState();
    return s === 'connected' ? 'Audio connected' : s === 'failed' ? 'Audio failed' : 'Connecting audio…';
  });

  constructor() {
    this.board.subscribe();
  }

  protected stateText(state: string): string {
    return STATE_TEXT[state] ?? state;
  }

  /** An ended call's last quality: the word first, then the MOS. */
  protected qualityText(mos: number): string {
    const level = qualityLevel(mos);
    return `${level[0].toUpperCase()}${level.slice(1)} quality · MOS ${mosText(mos)}`;
  }

  protected who(c: BoardCall): string {
    return c.caller.number || c.caller.name || 'an unknown number';
  }

  protected callerOf(callId: string): string {
    const c = this.board.board()?.calls.find((x) => x.callId === callId);
    return c ? this.who(c) : callId;
  }

  protected agentName(agentId: string | null): string {
    if (!agentId) return '—';
    return this.agents().find((a) => a.agentId === agentId)?.name ?? agentId;
  }

  protected modeOf(callId: string): MonitorMode | null {
    const m = this.board.monitoring();
    return m?.callId === callId ? m.mode : null;
  }

  /** Seconds waiting now: the board's figure aged by the time since it arrived. */
  protected waitText(c: BoardCall): string {
    if (c.waitingSec === null) return '—';
    return clock(c.waitingSec + Math.max(0, this.desk.now() - this.board.receivedAt()) / 1000);
  }

  /** Since the call arrived (the board carries no time the agent joined). */
  protected duration(c: BoardCall): string {
    const at = Date.parse(c.receivedAt);
    return Number.isFinite(at) ? clock((this.desk.now() - at) / 1000) : '—';
  }
}
