"""The media worker's metrics (sent to the hub in every ``status``)."""

from __future__ import annotations

from hitl_sip.metrics import Registry


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.active_calls = r.gauge("hitl_sip_active_calls", "Calls currently admitted")
        self.calls = r.counter(
            "hitl_sip_calls_total", "Finished or rejected calls by outcome", ["outcome"]
        )
        self.responses = r.counter(
            "hitl_sip_sip_responses_sent_total", "SIP responses sent by status class", ["class"]
        )
        self.requests = r.counter(
            "hitl_sip_sip_requests_received_total", "SIP requests received by method", ["method"]
        )
        self.underruns = r.counter(
            "hitl_sip_pcm_underruns_total",
            "20 ms frames with no audio: to_caller = nothing queued while a source was "
            "playing; from_caller = the call's stream gave no audio (jitter buffer empty, hold)",
            ["direction"],
        )
        self.overruns = r.counter(
            "hitl_sip_pcm_overruns_total",
            "20 ms frames dropped because a buffer was full (its consumer fell behind)",
            ["direction"],
        )
        for direction in ("to_caller", "from_caller"):
            self.underruns.inc(0, direction=direction)
            self.overruns.inc(0, direction=direction)
        for outcome in ("completed", "cancelled", "failed", "rejected_capacity",
                        "rejected_forbidden"):
            self.calls.inc(0, outcome=outcome)
        self.dtmf = r.counter("hitl_sip_dtmf_events_total", "DTMF digits received")
        self.relay_refused = r.counter(
            "hitl_sip_relay_refused_packets_total",
            "RTP/RTCP packets a call's relay dropped: their source is not the address the "
            "trunk's SDP names (counted when the call ends)")
        self.callback_errors = r.counter(
            "hitl_sip_media_callback_errors_total", "Exceptions caught in media callbacks"
        )
        self.registered = r.gauge(
            "hitl_sip_registration_active", "Outbound registration state (1 = registered)",
            ["account"],
        )
        self.loop_stalls = r.counter(
            "hitl_sip_event_loop_stalls_total",
            "Times the worker's event loop was blocked for more than 5 s (the log has stacks)",
        )
        self.draining = r.gauge("hitl_sip_worker_draining", "1 while the worker drains")
        # per call and leg, at its end: the mean of its quality intervals (issue 17)
        self.call_mos = r.histogram(
            "hitl_sip_call_mos", "Estimated MOS of each call's legs (mean over the call)",
            ["leg"], buckets=(1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4))
        self.call_loss = r.histogram(
            "hitl_sip_call_loss_percent", "Packets lost on each call's legs, percent",
            ["leg"], buckets=(0.1, 0.5, 1, 2, 5, 10, 20))
        self.call_jitter = r.histogram(
            "hitl_sip_call_jitter_ms", "Interarrival jitter of each call's legs, ms (mean)",
            ["leg"], buckets=(1, 2, 5, 10, 20, 30, 50, 100))
        self.bridge_frames = r.counter(
            "hitl_sip_bridge_frames_total",
            "Agent bridge frames by kind (counted when a peer closes): to_agent_frames / "
            "to_agent_silence (a pull found no caller frame) / to_agent_trimmed, "
            "from_agent_frames / from_agent_dropped (too far ahead of the trunk clock)",
            ["kind"],
        )
