"""The typed contracts at every process edge (see each module's docstring).

- :mod:`hitl_sip.protocol.wire` — JSON with size and nesting limits, for every edge;
- :mod:`hitl_sip.protocol.worker` — hub ⇄ worker messages and the call-state enum.
"""
