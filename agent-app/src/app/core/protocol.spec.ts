import {
  parseAgentState,
  parseBoard,
  parseCallQuality,
  parseDeskOptions,
  parseIncoming,
  parseMonitored,
  parseQuality,
  parseTranscript,
} from './protocol';

describe('protocol parsing', () => {
  it('fills defaults for missing incoming_call fields and drops bad transcript turns', () => {
    const call = parseIncoming({
      callId: 'c1',
      ringTimeoutSec: 'soon',
      botTranscript: [{ role: 'bot', text: 'hi', at: 'x' }, 5, { role: 'caller', text: '' }],
    });
    expect(call).toMatchObject({ callId: 'c1', threadId: '', ringTimeoutSec: 30, caller: { number: '', name: '' } });
    expect(call?.botTranscript).toEqual([{ role: 'bot', text: 'hi', at: 'x' }]);
    expect(parseIncoming({ callId: '' })).toBeNull();
    expect(parseIncoming(['c1'])).toBeNull();
  });

  it('reads agent_state and transcript strictly', () => {
    expect(parseAgentState({ agentId: 'a', status: 'weird' })).toEqual({
      agentId: 'a', name: 'a', status: 'away', activeCallId: null,
    });
    expect(parseTranscript({ callId: 'c', text: 'x', role: 'robot' })).toBeNull();
    expect(parseTranscript({ callId: 'c', text: 'x', role: 'agent', final: false })?.final).toBe(false);
  });

  it('reads the §6 additions: role, transfer, humanTranscript, supervisor lines', () => {
    expect(parseAgentState({ agentId: 'a', status: 'available', role: 'supervisor' })?.role).toBe('supervisor');
    expect(parseAgentState({ agentId: 'a', role: 'king' })?.role).toBeUndefined();
    const call = parseIncoming({
      callId: 'c1',
      transfer: { fromAgentId: 'a1', fromName: 'Alice', mode: 'warm', note: 'n' },
      humanTranscript: [{ role: 'agent', text: 'hi', at: 'x' }, { role: 'robot', text: 'no' }, { role: 'caller', text: '' }],
    });
    expect(call?.transfer).toEqual({ fromAgentId: 'a1', fromName: 'Alice', mode: 'warm', note: 'n' });
    expect(call?.humanTranscript).toEqual([{ role: 'agent', text: 'hi', at: 'x' }]);
    expect(parseIncoming({ callId: 'c1', transfer: null })).toMatchObject({ transfer: null, humanTranscript: [] });
    expect(parseTranscript({ callId: 'c', text: 'x', role: 'supervisor' })?.role).toBe('supervisor');
  });

  it('reads the agent briefing: text and source, null when absent or empty', () => {
    const summary = { text: 'Ada wants a refund; the bot could not help.', source: 'llm' };
    expect(parseIncoming({ callId: 'c1', summary })?.summary).toEqual(summary);
    expect(parseIncoming({ callId: 'c1', summary: { text: 'x', source: 'oracle' } })?.summary).toEqual({
      text: 'x', source: 'embedded',
    });
    expect(parseIncoming({ callId: 'c1', summary: null })?.summary).toBeNull();
    expect(parseIncoming({ callId: 'c1', summary: { text: '  ', source: 'llm' } })?.summary).toBeNull();
    expect(parseIncoming({ callId: 'c1', summary: 'text' })?.summary).toBeNull();
    expect(parseIncoming({ callId: 'c1' })?.summary).toBeNull();
  });

  it('reads board, desk options and call_monitored defensively', () => {
    const board = parseBoard({
      calls: [{ callId: 'c1', state: 'human', waitingSec: 'x', monitors: [{ agentId: 's1', mode: 'listen' }] }, { callId: 5 }],
      agents: [{ agentId: 'a1', name: 'Alice', status: 'busy', activeCallId: 'c1', role: 'agent' }, { name: 'nobody' }],
    });
    expect(board?.calls.map((c) => [c.callId, c.waitingSec, c.monitors.length])).toEqual([['c1', null, 1]]);
    expect(board?.agents.map((a) => a.agentId)).toEqual(['a1']);
    expect(parseBoard({ calls: [] })).toBeNull();
    expect(parseDeskOptions({ dispositions: ['a', 3, ''], queues: 'q', agents: [{ agentId: 'b' }] })).toEqual({
      dispositions: ['a'], queues: [], agents: [{ agentId: 'b', name: 'b', status: 'away' }],
    });
    expect(parseMonitored({ callId: 'c', mode: 'whisper', monitors: 1 })).toEqual({ callId: 'c', mode: 'whisper', monitors: 1 });
    expect(parseMonitored({ callId: 'c', mode: null, monitors: 0 })?.mode).toBeNull();
    expect(parseMonitored({ mode: 'listen' })).toBeNull();
  });

  it('reads call quality defensively: clamps, drops bad legs, the lowest leg when no MOS', () => {
    const caller = { leg: 'caller', lossPct: 5, latePct: 1.5, jitterMs: 30, mos: 3.4 };
    const agent = { leg: 'agent', lossPct: 0, latePct: 0, jitterMs: 2, mos: 4.4 };
    expect(parseQuality({ mos: 3.4, legs: [caller, agent] })).toEqual({ mos: 3.4, legs: [caller, agent] });
    expect(parseQuality({ legs: [caller, agent] })?.mos).toBe(3.4);
    const odd = parseQuality({
      mos: 9,
      legs: [
        { leg: 'caller', lossPct: -3, latePct: 400, jitterMs: 'x', mos: 0.2 },
        { leg: '', mos: 4 },
        { leg: 'agent' },
        { leg: 'sup-1', mos: Number.NaN },
        'caller',
      ],
    });
    expect(odd).toEqual({ mos: 4.5, legs: [{ leg: 'caller', lossPct: 0, latePct: 100, jitterMs: 0, mos: 1 }] });
    expect(parseQuality(null)).toBeNull();
    expect(parseQuality({ legs: [] })).toBeNull();
    expect(parseQuality({ mos: '4.2', legs: [] })).toBeNull();
    expect(parseQuality({ mos: 4.2 })).toEqual({ mos: 4.2, legs: [] });

    expect(parseCallQuality({ callId: 'c1', mos: 4.1, legs: [agent] })).toEqual({ callId: 'c1', mos: 4.1, legs: [agent] });
    expect(parseCallQuality({ mos: 4.1, legs: [] })).toBeNull();
    expect(parseCallQuality({ callId: 'c1', legs: 'x' })).toBeNull();
  });

  it('reads a board call quality: null when absent or garbled', () => {
    const board = parseBoard({
      calls: [
        { callId: 'c1', quality: { mos: 3.9, legs: [{ leg: 'caller', lossPct: 1, latePct: 0, jitterMs: 8, mos: 3.9 }] } },
        { callId: 'c2', quality: null },
        { callId: 'c3', quality: 'good' },
        { callId: 'c4' },
      ],
      agents: [],
    });
    expect(board?.calls.map((c) => c.quality?.mos ?? null)).toEqual([3.9, null, null, null]);
    expect(board?.calls[0].quality?.legs[0]).toEqual({ leg: 'caller', lossPct: 1, latePct: 0, jitterMs: 8, mos: 3.9 });
  });
});
