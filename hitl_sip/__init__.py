"""hitl-sip: a SIP/RTP media server where an AI voice bot hands calls to human agents."""

__version__ = "0.1.0"
