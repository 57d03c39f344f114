export function clock(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** Who said a line; `agent` is "You" unless the line is another agent's (a transfer). */
export function roleLabel(role: string, agent = 'You'): string {
  if (role === 'agent') return agent;
  return role === 'bot' ? 'Bot' : role === 'supervisor' ? 'Supervisor' : 'Caller';
}

export const STATUS_TEXT: Record<string, string> = {
  available: 'Available',
  away: 'Away',
  busy: 'Busy',
};
