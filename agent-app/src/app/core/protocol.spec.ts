import { parseAgentState, parseIncoming, parseTranscript } from './protocol';

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
});
