"""Tooling for the tests, benchmarks and corpus scripts — never imported by the server.

- :mod:`~hitl_sip.testing.agent` — a scripted agent (Socket.IO + aiortc WebRTC peer);
- :mod:`~hitl_sip.testing.pcap` — RTP pcap files (SIPp's ``play_pcap_audio``);
- :mod:`~hitl_sip.testing.analysis` — tone detection, levels, latency by correlation;
- :mod:`~hitl_sip.testing.wer` — word error rate.

(G.711 in numpy, for test signals and the bridge's own G.711 path, is
:mod:`hitl_sip.media.g711`.) A unit test checks that nothing under ``hitl_sip`` outside
this package imports it.
"""
