"""hitl_sip.hub"""
