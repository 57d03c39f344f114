"""hitl_sip.sip"""
