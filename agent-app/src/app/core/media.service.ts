import { Injectable, signal } from '@angular/core';

/** An error a person can act on, in words, with a stable code for the UI and the tests. */
export class MediaProblem extends Error {
  constructor(
    readonly code: 'mic_denied' | 'no_mic' | 'mic_busy' | 'insecure' | 'webrtc_failed',
    message: string,
  ) {
    super(message);
  }
}

export function describeMediaError(e: unknown): MediaProblem {
  if (e instanceof MediaProblem) return e;
  const name = e instanceof Error || (typeof e === 'object' && e !== null) ? (e as Error).name : '';
  switch (name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return new MediaProblem(
        'mic_denied',
        'Microphone permission denied. Allow the microphone for this site in the browser, then accept again.',
      );
    case 'NotFoundError':
    case 'OverconstrainedError':
      return new MediaProblem('no_mic', 'No microphone found. Connect one, then accept again.');
    case 'NotReadableError':
    case 'AbortError':
      return new MediaProblem(
        'mic_busy',
        'The microphone cannot be opened (another application may be using it).',
      );
    default:
      return new MediaProblem('webrtc_failed', `Audio could not start: ${String(e)}`);
  }
}

/** Level of a block of samples in dBFS (−100 for digital silence). */
export function levelDbfs(samples: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  const rms = Math.sqrt(sum / Math.max(1, samples.length));
  return rms > 0 ? Math.max(-100, 20 * Math.log10(rms)) : -100;
}

/** Offer/answer exchange with the hub: resolves with the answer SDP. */
export type Signal = (sdp: string) => Promise<string>;
export type Trickle = (c: RTCIceCandidate | null) => void;

const ICE_GATHER_WAIT_MS = 1500;
const METER_INTERVAL_MS = 100;

/**
 * The agent's audio: microphone, the RTCPeerConnection to the hub's media worker, the remote
 * audio element and the two level meters. One call at a time.
 */
@Injectable({ providedIn: 'root' })
export class MediaService {
  readonly micDbfs = signal(-100);
  readonly remoteDbfs = signal(-100);
  readonly peerState = signal<RTCPeerConnectionState | 'idle'>('idle');

  private pc: RTCPeerConnection | null = null;
  private local: MediaStream | null = null;
  private ctx: AudioContext | null = null;
  private meters: ReturnType<typeof setInterval> | null = null;
  private audio: HTMLAudioElement | null = null;
  private micAnalyser: AnalyserNode | null = null;
  private remoteAnalyser: AnalyserNode | null = null;

  get active(): boolean {
    return this.pc !== null;
  }

  async acquireMicrophone(): Promise<MediaStream> {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new MediaProblem(
        'insecure',
        'This page cannot use a microphone: open it over HTTPS (or on localhost).',
      );
    }
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        video: false,
      });
    } catch (e) {
      throw describeMediaError(e);
    }
  }

  /** Open the peer connection with `local` as the microphone; `signal` carries the offer. */
  async connect(local: MediaStream, signal: Signal, trickle: Trickle, onFailed: () => void): Promise<void> {
    this.close();
    this.local = local;
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    this.pc = pc;
    this.peerState.set(pc.connectionState);
    let offerSent = false;
    const late: (RTCIceCandidate | null)[] = [];
    let answered = false;
    pc.onicecandidate = (ev) => {
      if (!offerSent) return; // in the offer's SDP already
      if (answered) trickle(ev.candidate);
      else late.push(ev.candidate);
    };
    pc.onconnectionstatechange = () => {
      if (this.pc !== pc) return;
      this.peerState.set(pc.connectionState);
      if (pc.connectionState === 'failed') onFailed();
    };
    pc.ontrack = (ev) => this.playRemote(ev.streams[0] ?? new MediaStream([ev.track]));
    for (const track of local.getAudioTracks()) pc.addTrack(track, local);
    this.startMeters();
    this.meter(local, 'mic');
    await pc.setLocalDescription(await pc.createOffer());
    await this.gathered(pc);
    offerSent = true;
    const answer = await signal(pc.localDescription?.sdp ?? '');
    if (this.pc !== pc) return; // closed while waiting
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    answered = true;
    for (const c of late.splice(0)) trickle(c);
  }

  private gathered(pc: RTCPeerConnection): Promise<void> {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      };
      const check = () => pc.iceGatheringState === 'complete' && done();
      const timer = setTimeout(done, ICE_GATHER_WAIT_MS);
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  addRemoteCandidate(c: Record<string, unknown>): void {
    const candidate = typeof c['candidate'] === 'string' ? c['candidate'] : null;
    if (!this.pc || !candidate) return;
    void this.pc
      .addIceCandidate({
        candidate,
        sdpMid: typeof c['sdpMid'] === 'string' ? c['sdpMid'] : null,
        sdpMLineIndex: typeof c['sdpMLineIndex'] === 'number' ? c['sdpMLineIndex'] : null,
      })
      .catch(() => undefined);
  }

  setMuted(muted: boolean): void {
    for (const track of this.local?.getAudioTracks() ?? []) track.enabled = !muted;
  }

  private playRemote(stream: MediaStream): void {
    // Chromium's analyser reads silence from a remote stream that no media element plays.
    if (!this.audio) {
      this.audio = new Audio();
      this.audio.autoplay = true;
    }
    this.audio.srcObject = stream;
    void this.audio.play().catch(() => undefined);
    this.meter(stream, 'remote');
  }

  private context(): AudioContext | null {
    if (!this.ctx && typeof AudioContext !== 'undefined') this.ctx = new AudioContext();
    void this.ctx?.resume().catch(() => undefined);
    return this.ctx;
  }

  private meter(stream: MediaStream, which: 'mic' | 'remote'): void {
    const ctx = this.context();
    if (!ctx) return;
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    ctx.createMediaStreamSource(stream).connect(analyser);
    if (which === 'mic') this.micAnalyser = analyser;
    else this.remoteAnalyser = analyser;
  }

  private startMeters(): void {
    if (this.meters) return;
    const buf = new Float32Array(2048);
    this.meters = setInterval(() => {
      if (this.micAnalyser) {
        this.micAnalyser.getFloatTimeDomainData(buf);
        const muted = !(this.local?.getAudioTracks().some((t) => t.enabled) ?? false);
        this.micDbfs.set(muted ? -100 : levelDbfs(buf));
      }
      if (this.remoteAnalyser) {
        this.remoteAnalyser.getFloatTimeDomainData(buf);
        this.remoteDbfs.set(levelDbfs(buf));
      }
    }, METER_INTERVAL_MS);
  }

  close(): void {
    if (this.meters) clearInterval(this.meters);
    this.meters = null;
    this.pc?.close();
    this.pc = null;
    for (const track of this.local?.getTracks() ?? []) track.stop();
    this.local = null;
    if (this.audio) this.audio.srcObject = null;
    this.micAnalyser = this.remoteAnalyser = null;
    void this.ctx?.close().catch(() => undefined);
    this.ctx = null;
    this.micDbfs.set(-100);
    this.remoteDbfs.set(-100);
    this.peerState.set('idle');
  }
}
