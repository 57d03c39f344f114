"""The typed contracts at every process edge (see each module's docstring).

- :mod:`hitl_sip.protocol.wire` — JSON with size and nesting limits, for every edge;
- :mod:`hitl_sip.protocol.worker` — hub ⇄ worker messages and the call-state enum;
- :mod:`hitl_sip.protocol.cluster` — hub ⇄ hub envelopes over Redis;
- :mod:`hitl_sip.protocol.agent` — the ``/agent`` Socket.IO payloads (PROTOCOL.md §1), the
  acknowledgements and the request parser both namespaces use;
- :mod:`hitl_sip.protocol.bot` — the ``/bot`` Socket.IO payloads (PROTOCOL.md §2).
"""
